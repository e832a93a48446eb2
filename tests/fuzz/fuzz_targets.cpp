#include "fuzz_targets.h"

#include <unistd.h>

#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tide/io/gguf.h"
#include "tide/io/gguf_writer.h"
#include "tide/io/image.h"
#include "tide/io/pickle.h"
#include "tide/io/safetensors.h"
#include "tide/io/torch_file.h"
#include "tide/models/autoencoder_kl_config.h"
#include "tide/models/clip_text.h"
#include "tide/models/unet2d_condition_config.h"
#include "tide/pipeline/gguf_checkpoint.h"
#include "tide/pipeline/prompt_batch.h"
#include "tide/runtime/error.h"
#include "tide/schedulers/scheduler.h"
#include "tide/server/a1111_api.h"
#include "tide/server/access_control.h"
#include "tide/server/base64.h"
#include "tide/server/infotext.h"
#include "tide/server/server.h"
#include "tide/text/a1111_prompt.h"
#include "tide/train/image_files.h"
#include "tide/text/clip_tokenizer.h"
#include "tide/text/embeddings.h"
#include "tide/text/extra_networks.h"

namespace tide::fuzz {
namespace fs = std::filesystem;
namespace {

std::string as_string(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

// Parsers that read files get the bytes as a file of their own (one per process and thread).
fs::path scratch_file(const uint8_t* data, size_t size, const std::string& extension) {
  thread_local const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("tide-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  const fs::path path = dir / ("input" + extension);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

// A small tokenizer of byte symbols (every byte, no merges), enough to exercise the BPE and added tokens.
const text::ClipTokenizer& tokenizer() {
  static const text::ClipTokenizer t = [] {
    const fs::path dir = fs::temp_directory_path() / ("tide-fuzz-tokenizer-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    nlohmann::json vocab = nlohmann::json::object();
    int id = 0;
    for (int c = 33; c < 127; ++c) {
      vocab[std::string(1, static_cast<char>(c))] = id++;
      vocab[std::string(1, static_cast<char>(c)) + "</w>"] = id++;
    }
    vocab["<|startoftext|>"] = id++;
    vocab["<|endoftext|>"] = id++;
    std::ofstream(dir / "vocab.json") << vocab.dump();
    std::ofstream(dir / "merges.txt") << "#version: 0.2\na b\n";
    return text::ClipTokenizer::from_folder(dir);
  }();
  return t;
}

void safetensors(const uint8_t* d, size_t n) {
  io::SafetensorsFile file(scratch_file(d, n, ".safetensors"));
  for (const auto& e : file.entries()) (void)file.tensor(e.name).sum();
}
std::vector<std::string> safetensors_seeds() {
  const fs::path p = fs::temp_directory_path() / ("tide-fuzz-seed-" + std::to_string(::getpid()) + ".safetensors");
  io::write_safetensors(p, {{"a", at::arange(6, at::kFloat).view({2, 3})}, {"b", at::ones({2}, at::kHalf)}},
                        {{"format", "pt"}});
  std::ifstream in(p, std::ios::binary);
  return {std::string(std::istreambuf_iterator<char>(in), {})};
}

// The GGUF parser, every tensor's dequantization, and the stable-diffusion.cpp name mapping on top.
void gguf(const uint8_t* d, size_t n) {
  const fs::path p = scratch_file(d, n, ".gguf");
  io::GgufFile file(p);
  for (const auto& t : file.tensors()) {
    try {
      (void)file.tensor(t.name).sum();
    } catch (const Error&) {  // types tide does not read: try the next tensor
    }
  }
  const auto checkpoint = pipeline::gguf_checkpoint(p);
  for (const auto& name : checkpoint.names()) (void)checkpoint.tensor(name).sum();
}
std::vector<std::string> gguf_seeds() {
  const fs::path p = fs::temp_directory_path() / ("tide-fuzz-seed-" + std::to_string(::getpid()) + ".gguf");
  const std::string hf = "cond_stage_model.transformer.text_model.";
  io::write_gguf(p,
                 {{"model.diffusion_model.input_blocks.0.0.weight", at::ones({2, 4, 3, 3}), io::GgmlType::F16},
                  {hf + "final_layer_norm.weight", at::ones({1024}), io::GgmlType::BF16},
                  {hf + "encoder.layers.0.self_attn.q_proj.weight", at::arange(64, at::kFloat).view({2, 32}), io::GgmlType::Q8_0},
                  {hf + "encoder.layers.0.self_attn.k_proj.weight", at::ones({2, 32}), io::GgmlType::Q4_0},
                  {hf + "encoder.layers.0.self_attn.v_proj.weight", at::ones({2, 32}), io::GgmlType::Q5_1},
                  {"first_stage_model.decoder.mid.attn_1.q.weight", at::ones({1, 32}), io::GgmlType::Q4_1},
                  {"model.diffusion_model.out.2.bias", at::ones({32}), io::GgmlType::Q5_0}},
                 {{"general.architecture", "sd2"}});
  std::ifstream in(p, std::ios::binary);
  return {std::string(std::istreambuf_iterator<char>(in), {})};
}

void torch_file(const uint8_t* d, size_t n) {
  const auto root = io::load_torch_file(scratch_file(d, n, ".pt"));
  try {
    for (const auto& [name, t] : io::state_dict_tensors(root, "input")) (void)t.sum();
  } catch (const Error&) {
  }
}

void pickle(const uint8_t* d, size_t n) {
  io::unpickle(d, n, nullptr, "input");
}
void configs(const uint8_t* d, size_t n) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(as_string(d, n));
  } catch (const nlohmann::json::exception&) {
    return;  // not JSON: read_json reports that with the file name
  }
  auto attempt = [](auto&& f) {
    try {
      f();
    } catch (const Error&) {
    }
  };
  attempt([&] { (void)models::UNet2DConditionConfig::from_json(j); });
  attempt([&] { (void)models::AutoencoderKLConfig::from_json(j); });
  attempt([&] { (void)models::ClipTextConfig::from_json(j); });
  for (const auto& name : schedulers::scheduler_names())
    attempt([&] { schedulers::make_scheduler(name, j, {})->set_timesteps(4); });
}
std::vector<std::string> config_seeds() {
  return {R"({"_class_name": "UNet2DConditionModel", "block_out_channels": [32, 64], "layers_per_block": 1,
              "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
              "cross_attention_dim": 16, "attention_head_dim": 2, "sample_size": 16})",
          R"({"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading"})",
          R"({"hidden_size": 16, "intermediate_size": 24, "num_attention_heads": 2, "num_hidden_layers": 2,
              "vocab_size": 100, "max_position_embeddings": 77, "hidden_act": "quick_gelu"})"};
}

void tokenize(const uint8_t* d, size_t n) {
  (void)tokenizer().encode(as_string(d, n));
  (void)tokenizer().encode_padded(as_string(d, n));
}

void a1111_prompt(const uint8_t* d, size_t n) {
  const std::string prompt = as_string(d, n);
  (void)text::extract_lora_tags(prompt);
  text::ChunkingOptions options;
  options.start_id = tokenizer().bos_id();
  options.end_id = tokenizer().eos_id();
  options.comma_id = tokenizer().token_id(",</w>").value_or(-1);
  const auto chunked = text::chunk_prompt(text::parse_prompt_attention(prompt), tokenizer(), options);
  for (const auto& c : chunked.chunks)
    if (c.tokens.size() != 77 || c.multipliers.size() != 77) std::abort();
}
std::vector<std::string> prompt_seeds() {
  return {"a (red:1.3) car, [blurry] BREAK ((masterpiece)) \\(x\\) <lora:pixel:0.8>", "(a:1.2.3) [[b]] (c:.5)",
          "caf\xC3\xA9 (na\xC3\xAFve:1.2) BREAK \xE6\x9D\xB1\xE4\xBA\xAC"};
}

void png(const uint8_t* d, size_t n) {
  const auto image = io::read_png(scratch_file(d, n, ".png"));
  (void)image.rgb8.sum();
}
std::vector<std::string> png_seeds() {
  const fs::path p = fs::temp_directory_path() / ("tide-fuzz-seed-" + std::to_string(::getpid()) + ".png");
  io::write_png(p, at::arange(4 * 3 * 3, at::kByte).view({4, 3, 3}), {{"parameters", "a cat\nSteps: 2"}});
  std::ifstream in(p, std::ios::binary);
  return {std::string(std::istreambuf_iterator<char>(in), {})};
}

// img2img's init_images and mask: PNG or JPEG bytes from a request, decoded in memory.
void image_bytes(const uint8_t* d, size_t n) {
  (void)train::decode_rgb_image(std::string(reinterpret_cast<const char*>(d), n), "request image").sum();
}
std::vector<std::string> image_bytes_seeds() {
  std::vector<std::string> seeds = png_seeds();
  seeds.push_back(std::string("\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", 20));
  return seeds;
}

// An API request's Authorization header against a server with an API key and Basic credentials.
void authorization(const uint8_t* d, size_t n) {
  static const server::ServerOptions options = [] {
    server::ServerOptions o;
    o.api_key = "key";
    o.api_auth = server::parse_api_auth("alice:pw,bob:x:y");
    return o;
  }();
  (void)server::authorized(options, std::string(reinterpret_cast<const char*>(d), n));
}
std::vector<std::string> authorization_seeds() { return {"Bearer key", "Basic YWxpY2U6cHc=", "Basic Ym9iOng6eQ=="}; }

// tide serve's /sdapi/v1/png-info: a JSON body holding a base64 PNG whose "parameters" text is parsed as A1111
// infotext. Bad input is a 4xx reply; a reply the server could not send (5xx) is a bug.
void png_info(const uint8_t* d, size_t n) {
  const server::HttpReply reply = server::a1111::png_info(as_string(d, n));
  if (reply.status >= 500) std::abort();
  (void)server::parse_infotext(as_string(d, n));
}
std::vector<std::string> png_info_seeds() {
  std::vector<std::string> seeds;
  for (const auto& png : png_seeds()) seeds.push_back(R"({"image": ")" + server::base64_encode(png) + R"("})");
  seeds.push_back("a cat, (red:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, "
                  "CFG scale: 7, Seed: 42, Size: 512x768, Model: sd15, Lora hashes: \"ink: abc\"");
  return seeds;
}

void embedding(const uint8_t* d, size_t n) {
  // By content: safetensors or a torch zip, whatever the name says.
  (void)text::read_embedding_file(scratch_file(d, n, ".bin"));
}

void prompt_file(const uint8_t* d, size_t n) {
  (void)pipeline::read_prompt_batch(scratch_file(d, n, ".txt"), pipeline::GenerationRequest{});
}
std::vector<std::string> prompt_file_seeds() {
  return {"a cat\n# note\n{\"prompt\": \"a dog\", \"seed\": 3, \"name\": \"dog\", \"num_images\": 2}\n{bad\n"};
}

std::vector<std::string> no_seeds() { return {}; }

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"safetensors", safetensors, safetensors_seeds}, {"torch_file", torch_file, no_seeds},
      {"pickle", pickle, no_seeds},                {"configs", configs, config_seeds},
      {"tokenizer", tokenize, prompt_seeds},           {"a1111_prompt", a1111_prompt, prompt_seeds},
      {"png", png, png_seeds},                         {"embedding", embedding, safetensors_seeds},
      {"prompt_file", prompt_file, prompt_file_seeds}, {"gguf", gguf, gguf_seeds},
      {"image_bytes", image_bytes, image_bytes_seeds}, {"authorization", authorization, authorization_seeds},
      {"png_info", png_info, png_info_seeds}};
  return all;
}

}  // namespace tide::fuzz
