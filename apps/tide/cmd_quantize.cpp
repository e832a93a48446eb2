// tide quantize: a model with its weights stored as int8 (per-channel scales), f16 or bf16, written as a
// diffusers folder that tide loads directly, or as one original-layout .safetensors file.
#include <iostream>

#include "args.h"
#include "commands.h"
#include "tide/nn/weight_storage.h"
#include "tide/pipeline/model_source.h"
#include "tide/pipeline/model_writer.h"
#include "tide/pipeline/single_file.h"
#include "tide/runtime/error.h"

namespace tide::cli {
namespace fs = std::filesystem;

namespace {

uintmax_t bytes_of(const fs::path& path) {
  if (!fs::is_directory(path)) return fs::file_size(path);
  uintmax_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(path))
    if (e.is_regular_file()) bytes += e.file_size();
  return bytes;
}

// What the files say about how they were made: the format and the layers kept in float.
nlohmann::json recipe(nn::WeightFormat format, const std::string& source) {
  nlohmann::json r = {{"weights", nn::weight_format_name(format)}, {"source", source}};
  if (format == nn::WeightFormat::kInt8) {
    r["scheme"] = "symmetric per output channel: w[o] = q[o] * weight_scale[o], q in [-127, 127]";
    r["kept_float"] = "unet: conv_in, conv_out, time_embedding, add_embedding (f32); vae: f16; norms, biases, embeddings: f32";
  }
  return r;
}

}  // namespace

int run_quantize(int argc, char** argv) {
  Args args("quantize", "tide quantize --model MODEL --weights int8|f16|bf16 --output PATH",
            "Writes MODEL with its weights stored smaller: int8 (one scale per output channel, about a quarter of\n"
            "float32; the UNet's first/last layers and embeddings stay float32, the VAE float16), f16 or bf16.\n"
            "The output is a diffusers folder, or (an --output ending in .safetensors) one file in the original\n"
            "checkpoint layout with each int8 weight's float32 scales beside it as <name>_scale; tide\n"
            "generate/serve/bench load either like any model (int8 layers stay int8).");
  args.option("model", "MODEL", "a diffusers folder, a single-file checkpoint or a Hub id")
      .option("weights", "FORMAT", "int8, f16 or bf16")
      .option("output", "PATH", "the folder, or the .safetensors file, to write; must not exist yet")
      .option("variant", "NAME", "read weight files of this variant, e.g. fp16 (*.fp16.safetensors)")
      .option("tokenizer", "DIR", "single-file checkpoints: tokenizer folder (or a model folder with tokenizer/); found on the Hub when not given");
  if (!args.parse(argc, argv)) return 0;
  if (!args.has("model")) throw Error("tide quantize: --model is required");
  if (!args.has("weights")) throw Error("tide quantize: --weights is required (int8, f16 or bf16)");
  if (!args.has("output")) throw Error("tide quantize: --output is required");
  const nn::WeightFormat format = nn::parse_weight_format(args.get("weights"), "tide quantize: --weights");
  if (format == nn::WeightFormat::kFloat32) throw Error("tide quantize: --weights f32 makes nothing smaller; use tide convert");
  const fs::path output = args.get("output");
  if (fs::exists(output)) throw Error("tide quantize: " + output.string() + " already exists; choose a new name");
  const fs::path parent = output.parent_path().empty() ? fs::path(".") : output.parent_path();
  if (!fs::is_directory(parent)) throw Error("tide quantize: output folder " + parent.string() + " does not exist");
  const bool single_file = output.extension() == ".safetensors";

  pipeline::LoadOptions load;
  if (args.has("variant")) load.variant = args.get("variant");
  if (args.has("tokenizer")) load.tokenizer = args.get("tokenizer");
  load.weights = format;
  // A 16-bit single file is converted tensor by tensor and carries no tokenizer; int8 is quantized by loading
  // the pipeline, tokenizers included.
  load.tokenizers = !single_file || format == nn::WeightFormat::kInt8;
  const std::string model = args.get("model");
  const std::map<std::string, std::string> metadata = {{"tide.quantization", recipe(format, model).dump()}};
  pipeline::PipelineParts parts = pipeline::model_parts(model, load);
  std::cerr << "quantizing " << parts.description << " to " << nn::weight_format_name(format) << "\n";
  if (single_file && format != nn::WeightFormat::kInt8) {
    // 16-bit: converted tensor by tensor from the source, never holding the model in memory.
    const auto family = pipeline::family_of_configs(parts.configs);
    std::map<std::string, io::WeightSource> components;
    for (const auto& name : pipeline::family_components(family)) components.emplace(name, parts.weights.at(name));
    pipeline::write_single_file(output, family, components, parts.configs,
                                format == nn::WeightFormat::kFloat16 ? at::kHalf : at::kBFloat16, metadata);
  } else if (single_file) {
    // int8: quantized as the pipeline loads (what stays float is decided per layer), then written in the
    // original layout with each int8 weight's scales beside it.
    const auto family = pipeline::family_of_configs(parts.configs);
    const auto configs = parts.configs;
    auto pipe = pipeline::StableDiffusionPipeline::from_parts(std::move(parts));
    pipeline::write_single_file(output, family, pipeline::pipeline_weights(*pipe), configs, std::nullopt, metadata);
  } else {
    pipeline::PipelineParts described = parts;  // configs and tokenizers for the writer; the pipeline takes the weights
    auto pipe = pipeline::StableDiffusionPipeline::from_parts(std::move(parts));
    pipeline::write_pipeline_folder(*pipe, described, output, metadata);
  }
  std::cerr << "wrote " << output.string() << " (" << bytes_of(output) / (1024 * 1024) << " MiB)\n";
  std::cout << output.string() << "\n";
  return 0;
}

}  // namespace tide::cli
