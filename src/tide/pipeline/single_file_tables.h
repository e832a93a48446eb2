// The name tables behind single_file.h (internal): for each family, one table per component saying which
// original tensor is which diffusers tensor, and how the value changes. Both directions read the same table.
#pragma once
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tide/pipeline/single_file.h"

namespace tide::pipeline::detail {

// How a value differs between the layouts.
enum class Transform {
  None,
  ConvToLinear,  // VAE mid attention q/k/v/proj_out: original 1x1 conv [C, C, 1, 1], diffusers linear [C, C]
  Transpose,     // OpenCLIP text_projection: original [D, P] (x @ W), diffusers Linear weight [P, D]
  Chunk,         // OpenCLIP attn.in_proj_*: original [3D, ...] = q, k, v stacked, diffusers one third each
};

// The tensors inside a renamed block: one original leaf is one (or, chunked, three) diffusers leaves.
struct Leaf {
  std::string original;
  std::vector<std::string> diffusers;
  Transform transform = Transform::None;
};

// `original` and `diffusers` are either prefixes ending in '.', whose remainder `leaves` renames (no leaves:
// the remainder is the same in both), or whole names.
struct Rule {
  std::string original, diffusers;
  const std::vector<Leaf>* leaves = nullptr;
  Transform transform = Transform::None;  // whole names only
};

struct ComponentTable {
  std::string component;  // "unet", "vae", "text_encoder", "text_encoder_2"
  std::string prefix;     // of its tensors in the single file: "model.diffusion_model.", ...
  std::vector<Rule> rules;
  // Names (without prefix) that have no rule and are dropped on purpose (e.g. position_ids).
  std::function<bool(const std::string&)> ignored;
};

// One diffusers tensor an original tensor becomes (chunk: which third, for Transform::Chunk).
struct Target {
  std::string name;
  Transform transform = Transform::None;
  int chunk = 0;
};

// One original tensor a diffusers tensor comes from; for Transform::Chunk, `group` lists the three
// diffusers names stacked into it (in order).
struct Source {
  std::string name;
  Transform transform = Transform::None;
  int chunk = 0;
  std::vector<std::string> group;
};

// The tables of `family` for its components, shaped by their configs ("unet", "vae", "text_encoder",
// "text_encoder_2").
std::vector<ComponentTable> family_tables(Family family, const std::map<std::string, nlohmann::json>& configs);

// The UNet's table alone (also names kohya LoRA layers written in the original layout, SDXL's input_blocks...).
ComponentTable unet_table(const nlohmann::json& config);

// `name` is without the table's prefix. Empty / nullopt: no rule.
std::vector<Target> to_diffusers(const ComponentTable& table, const std::string& name);
std::optional<Source> to_original(const ComponentTable& table, const std::string& name);

}  // namespace tide::pipeline::detail
