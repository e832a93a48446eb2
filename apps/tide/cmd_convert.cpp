// tide convert: a diffusers model folder <-> one original-layout single-file checkpoint.
#include <unistd.h>

#include <fstream>
#include <iostream>

#include "args.h"
#include "commands.h"
#include "tide/io/gguf.h"
#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/models/presets.h"
#include "tide/pipeline/single_file.h"
#include "tide/runtime/error.h"

namespace tide::cli {
namespace fs = std::filesystem;
using nlohmann::json;
namespace {

const std::vector<std::string> kModelComponents = {"unet", "vae", "text_encoder", "text_encoder_2"};

std::optional<at::ScalarType> parse_dtype(const std::string& name) {
  if (name.empty()) return std::nullopt;
  if (name == "f16" || name == "fp16" || name == "float16") return at::kHalf;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "f32" || name == "fp32" || name == "float32") return at::kFloat;
  throw Error("tide convert: --dtype must be f16, bf16 or f32, got '" + name + "'");
}

// --dtype for a .gguf output: the type of the matrices whose rows fit its blocks (f16 by default).
io::GgmlType parse_gguf_type(const std::string& name) {
  static const std::map<std::string, io::GgmlType> types = {
      {"", io::GgmlType::F16},      {"f16", io::GgmlType::F16},   {"f32", io::GgmlType::F32},
      {"bf16", io::GgmlType::BF16}, {"q8_0", io::GgmlType::Q8_0}, {"q5_1", io::GgmlType::Q5_1},
      {"q5_0", io::GgmlType::Q5_0}, {"q4_1", io::GgmlType::Q4_1}, {"q4_0", io::GgmlType::Q4_0}};
  const auto it = types.find(name);
  if (it == types.end())
    throw Error("tide convert: --dtype for a .gguf file must be f16, f32, bf16, q8_0, q5_1, q5_0, q4_1 or q4_0, got '" +
                name + "'");
  return it->second;
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw Error("cannot write " + path.string());
}

// The component weights and configs of a diffusers folder.
void read_folder(const fs::path& dir, const std::string& variant, std::map<std::string, io::WeightSource>& components,
                 std::map<std::string, json>& configs) {
  if (!fs::exists(dir / "model_index.json"))
    throw Error(dir.string() + " is not a diffusers model folder: it has no model_index.json");
  for (const auto& c : kModelComponents) {
    if (!fs::is_directory(dir / c)) continue;
    configs[c] = io::read_json(dir / c / "config.json");
    components[c] = io::WeightSource::from_component_dir(dir / c, variant);
  }
  configs["scheduler"] = io::read_json(dir / "scheduler" / "scheduler_config.json");
  configs["model_index"] = io::read_json(dir / "model_index.json");
}

// Tokenizer files from a tokenizer folder or a model folder's tokenizer/ (and tokenizer_2/). SDXL's second
// tokenizer differs from the first only in its padding token, so one tokenizer folder serves both.
void copy_tokenizers(const fs::path& from, const fs::path& to, pipeline::Family family) {
  const bool model_folder = fs::is_directory(from / "tokenizer");
  const fs::path first = model_folder ? from / "tokenizer" : from;
  if (!fs::exists(first / "vocab.json")) throw Error("tide convert: no tokenizer (vocab.json) in " + first.string());
  fs::copy(first, to / "tokenizer", fs::copy_options::recursive);
  if (family != pipeline::Family::SDXL) return;
  if (model_folder && fs::is_directory(from / "tokenizer_2")) {
    fs::copy(from / "tokenizer_2", to / "tokenizer_2", fs::copy_options::recursive);
    return;
  }
  fs::copy(first, to / "tokenizer_2", fs::copy_options::recursive);
  json config = fs::exists(first / "tokenizer_config.json") ? io::read_json(first / "tokenizer_config.json") : json::object();
  config["pad_token"] = models::presets::preset_config("sdxl", "tokenizer_2")["pad_token"];
  write_text(to / "tokenizer_2" / "tokenizer_config.json", config.dump(2));
}

void write_folder(const pipeline::SingleFileModel& model, const fs::path& dir, std::optional<at::ScalarType> dtype,
                  const std::string& tokenizer) {
  for (const auto& [component, weights] : model.components) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& name : weights.names()) {
      at::Tensor t = weights.tensor(name);
      if (dtype && t.is_floating_point()) t = t.to(*dtype);
      tensors.emplace_back(name, std::move(t));
    }
    const bool text = component.rfind("text_encoder", 0) == 0;
    fs::create_directories(dir / component);
    io::write_safetensors(dir / component / (text ? "model.safetensors" : "diffusion_pytorch_model.safetensors"), tensors);
    write_text(dir / component / "config.json", model.configs.at(component).dump(2));
  }
  write_text(dir / "scheduler" / "scheduler_config.json", model.configs.at("scheduler").dump(2));
  write_text(dir / "model_index.json", model.configs.at("model_index").dump(2));
  if (!tokenizer.empty()) copy_tokenizers(tokenizer, dir, model.family);
}

std::string size_text(const fs::path& path) {
  uintmax_t bytes = 0;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.is_regular_file()) bytes += e.file_size();
  } else {
    bytes = fs::file_size(path);
  }
  return std::to_string(bytes / (1024 * 1024)) + " MiB";
}

}  // namespace

int run_convert(int argc, char** argv) {
  Args args("convert", "tide convert --model SRC --output DST [--to single-file|diffusers] [options]",
            "Converts a diffusers model folder into one .safetensors file in the original layout of the released\n"
            "Stable Diffusion 1.x / 2.x / XL checkpoints (component configs kept in its metadata), or such a\n"
            "single file into a diffusers folder. An output ending in .gguf is a GGUF file as stable-diffusion.cpp\n"
            "reads them (tide too), its matrices in --dtype (f16 by default; q8_0 ... q4_0 quantize them).");
  args.option("model", "PATH", "diffusers model folder (with model_index.json) or single-file .safetensors checkpoint")
      .option("output", "PATH", "the .safetensors or .gguf file, or the folder, to write; must not exist yet")
      .option("to", "FORMAT", "single-file or diffusers", "the other format than --model")
      .option("dtype", "TYPE",
              "store floating-point weights as f16, bf16 or f32; for a .gguf file also q8_0, q5_1, q5_0, q4_1 or "
              "q4_0 (matrices whose rows fit 32-value blocks; the rest f16, vectors f32)",
              "as they are; f16 for .gguf")
      .option("variant", "NAME", "read weight files of this variant from a folder, e.g. fp16 (*.fp16.safetensors)")
      .option("tokenizer", "DIR",
              "to a folder: copy the tokenizer from DIR (a tokenizer folder, or a model folder with tokenizer/)");
  if (!args.parse(argc, argv)) return 0;
  if (!args.has("model")) throw Error("tide convert: --model is required (a diffusers folder or a .safetensors file)");
  if (!args.has("output")) throw Error("tide convert: --output is required");
  const fs::path source = args.get("model"), output = args.get("output");
  if (!fs::exists(source)) throw Error("tide convert: " + source.string() + " not found");
  const bool from_folder = fs::is_directory(source);
  const std::string to = args.has("to") ? args.get("to") : (from_folder ? "single-file" : "diffusers");
  if (to != "single-file" && to != "diffusers")
    throw Error("tide convert: --to must be single-file or diffusers, got '" + to + "'");
  if ((to == "single-file") == !from_folder)
    throw Error("tide convert: " + source.string() + " already is " +
                (from_folder ? std::string("a diffusers folder") : std::string("a single file")));
  if (fs::exists(output)) throw Error("tide convert: " + output.string() + " already exists; choose a new name");
  const fs::path parent = output.parent_path().empty() ? fs::path(".") : output.parent_path();
  if (!fs::is_directory(parent)) throw Error("tide convert: output folder " + parent.string() + " does not exist");
  const bool to_gguf = from_folder && output.extension() == ".gguf";
  const std::string dtype_name = args.has("dtype") ? args.get("dtype") : "";
  const auto dtype = to_gguf ? std::nullopt : parse_dtype(dtype_name);
  const auto gguf_type = to_gguf ? parse_gguf_type(dtype_name) : io::GgmlType::F16;
  const std::string tokenizer = args.has("tokenizer") ? args.get("tokenizer") : "";
  if (!tokenizer.empty() && !fs::is_directory(tokenizer)) throw Error("tide convert: tokenizer folder " + tokenizer + " not found");

  if (from_folder) {
    if (output.extension() != ".safetensors" && !to_gguf)
      throw Error("tide convert: --output must name a .safetensors or .gguf file, got " + output.string());
    std::map<std::string, io::WeightSource> components;
    std::map<std::string, json> configs;
    read_folder(source, args.has("variant") ? args.get("variant") : "", components, configs);
    const auto family = pipeline::family_of_configs(configs);
    if (to_gguf)
      pipeline::write_gguf_single_file(output, family, components, configs, gguf_type);  // atomic
    else
      pipeline::write_single_file(output, family, components, configs, dtype);  // atomic
    std::cerr << "wrote " << pipeline::family_name(family) << (to_gguf ? " GGUF file, " : " single file, ")
              << size_text(output) << "\n";
  } else {
    const auto model = pipeline::read_single_file(source);
    fs::path tmp = output;
    tmp += ".tmp-" + std::to_string(::getpid());
    try {
      write_folder(model, tmp, dtype, tokenizer);
      fs::rename(tmp, output);
    } catch (...) {
      std::error_code ignored;
      fs::remove_all(tmp, ignored);
      throw;
    }
    std::cerr << "wrote " << pipeline::family_name(model.family) << " diffusers folder, " << size_text(output) << "\n";
    if (tokenizer.empty())
      std::cerr << "note: the folder has no tokenizer; copy one in (or convert again with --tokenizer DIR) "
                   "before generating with it\n";
  }
  std::cout << output.string() << "\n";
  return 0;
}

}  // namespace tide::cli
