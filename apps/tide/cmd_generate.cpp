// tide generate: text to image, image to image (--init-image) and inpainting (--init-image --mask).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <cstdio>
#include <sstream>
#include <tuple>

#include "args.h"
#include "commands.h"
#include "thread_flags.h"
#include "tide/adapters/lora_argument.h"
#include "tide/io/image.h"
#include "tide/io/npy.h"
#include "tide/pipeline/latent_preview.h"
#include "tide/pipeline/model_source.h"
#include "tide/pipeline/prompt_batch.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/nn/weight_storage.h"
#include "tide/runtime/compute_dtype.h"
#include "tide/runtime/error.h"
#include "tide/runtime/load_aware_threads.h"
#include "tide/runtime/memory.h"
#include "tide/runtime/progress.h"
#include "tide/runtime/sha256.h"
#include "tide/schedulers/scheduler.h"
#include "tide/text/embeddings.h"
#include "tide/text/extra_networks.h"
#include "tide/train/communicator.h"
#include "tide/train/image_files.h"
#include "tide/version.h"

namespace tide::cli {
namespace fs = std::filesystem;
namespace {

std::string joined_scheduler_names() {
  std::string s;
  for (const auto& n : schedulers::scheduler_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// out.png -> out-0.png, out-1.png, ... when there are several images.
fs::path numbered(const fs::path& output, int index, int count) {
  if (count == 1) return output;
  fs::path p = output;
  p.replace_filename(output.stem().string() + "-" + std::to_string(index) + output.extension().string());
  return p;
}

// The settings in the form most image tools read ("parameters" text chunk).
// How the PNG names the model: a Hub id as given, else the folder's or file's name.
std::string model_label(std::string model) {
  while (model.size() > 1 && model.back() == '/') model.pop_back();
  const fs::path path(model);
  if (fs::is_regular_file(path)) return path.stem().string();
  return fs::exists(path) ? path.filename().string() : model;
}

// LoRAs as A1111 writes them: <lora:NAME:WEIGHT> after the prompt and `Lora hashes` (sha256, 12 digits).
struct LoraRecord {
  std::string label, short_hash;
  double weight;
};

std::string parameters_text(const pipeline::GenerationRequest& r, const std::string& scheduler,
                            const std::string& model, at::ScalarType dtype, int index,
                            const std::vector<LoraRecord>& loras) {
  std::ostringstream s;
  s << r.prompt;
  for (const auto& l : loras) s << " <lora:" << l.label << ":" << l.weight << ">";
  s << "\n";
  if (r.negative_prompt) s << "Negative prompt: " << *r.negative_prompt << "\n";
  s << "Steps: " << r.steps << ", Sampler: " << scheduler << (r.scheduler_options.karras ? " karras" : "")
    << ", CFG scale: " << r.guidance << ", Seed: " << r.seed << ", Size: " << r.width << "x" << r.height
    << ", Model: " << model << ", Batch index: " << index;
  if (r.scheduler_options.eta != 0) s << ", Eta: " << r.scheduler_options.eta;
  if (r.clip_skip != 1) s << ", Clip skip: " << r.clip_skip;
  if (r.tome.enabled()) s << ", Token merging ratio: " << r.tome.ratio;
  if (r.cache_interval > 1) s << ", DeepCache interval: " << r.cache_interval;
  if (r.prompt_syntax == pipeline::PromptSyntax::kPlain) s << ", Prompt syntax: plain";
  if (r.init_image.defined() && r.strength) s << ", Denoising strength: " << *r.strength;
  if (r.mask.defined() && r.mask_blur > 0) s << ", Mask blur: " << r.mask_blur;
  if (dtype != at::kFloat) s << ", Dtype: " << runtime::compute_dtype_name(dtype);
  if (!loras.empty()) {
    s << ", Lora hashes: \"";
    for (size_t i = 0; i < loras.size(); ++i) s << (i ? ", " : "") << loras[i].label << ": " << loras[i].short_hash;
    s << "\"";
  }
  s << ", Version: tide " TIDE_VERSION;
  return s.str();
}

// The records of these LoRAs for the PNG parameters; file hashes computed once per file.
class LoraRecords {
 public:
  std::vector<LoraRecord> operator()(const std::vector<adapters::LoraSpec>& loras) {
    std::vector<LoraRecord> out;
    for (const auto& l : loras) {
      auto [it, inserted] = hashes_.try_emplace(l.file);
      if (inserted) it->second = runtime::sha256_file(l.file).substr(0, 12);
      out.push_back({adapters::lora_label(l), it->second, l.weight});
    }
    return out;
  }

 private:
  std::map<fs::path, std::string> hashes_;
};

// A1111's <lora:NAME:WEIGHT> tags leave `prompt` and join `loras`, their names files in the LoRA folder.
void take_lora_tags(std::string& prompt, const std::optional<fs::path>& lora_dir,
                    std::vector<adapters::LoraSpec>& loras) {
  const auto tagged = text::extract_lora_tags(prompt);
  for (const auto& tag : tagged.loras) {
    adapters::LoraSpec spec = adapters::parse_lora_argument(tag.name, lora_dir);
    spec.weight = tag.unet_weight;
    if (tag.text_encoder_weight != tag.unet_weight) spec.text_encoder_weight = tag.text_encoder_weight;
    loras.push_back(spec);
  }
  prompt = tagged.prompt;
}

// "1024,768" -> (1024, 768)
std::pair<int, int> int_pair(const Args& args, const std::string& name) {
  const std::string v = args.get(name);
  int a = 0, b = 0;
  char comma = 0, rest = 0;
  if (std::sscanf(v.c_str(), "%d %c %d %c", &a, &comma, &b, &rest) != 3 || comma != ',' || a < 0 || b < 0)
    throw Error("tide generate: --" + name + " expects two non-negative integers like 1024,1024, got '" + v + "'");
  return {a, b};
}

// --prompts FILE: every line of the file this rank owns, with one pipeline.
int run_prompt_file(const Args& args, pipeline::StableDiffusionPipeline& pipe, pipeline::GenerationRequest base,
                    const std::vector<std::string>& embedding_tokens, at::ScalarType dtype,
                    const std::optional<fs::path>& lora_dir, LoraRecords& lora_records) {
  auto communicator =
      train::launched_by_mpirun() ? train::make_mpi_communicator() : train::make_single_process_communicator();
  base.seed = communicator->broadcast(base.seed);  // one base seed for all ranks, also when it was drawn at random
  const fs::path dir = args.get("output-dir");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw Error("tide generate: cannot create the output folder " + dir.string());
  auto items = pipeline::read_prompt_batch(args.get("prompts"), base);
  for (auto& item : items) {  // a multi-vector token stands for all its tokens, as for --prompt
    item.loras = pipe.loras();  // --lora's, and with the a1111 syntax the line's own tags
    if (item.request.prompt_syntax == pipeline::PromptSyntax::kA1111 && item.error.empty()) {
      try {
        take_lora_tags(item.request.prompt, lora_dir, item.loras);
      } catch (const Error& e) {
        item.error = e.what();
      }
    }
    item.request.prompt = text::expand_multi_vector_tokens(item.request.prompt, pipe.tokenizer(), embedding_tokens);
    if (item.request.negative_prompt)
      item.request.negative_prompt =
          text::expand_multi_vector_tokens(*item.request.negative_prompt, pipe.tokenizer(), embedding_tokens);
  }
  // With no line changing the LoRAs, int8 weights need no plain copy beside the packed one.
  if (std::all_of(items.begin(), items.end(),
                  [&](const pipeline::BatchItem& item) { return adapters::same_loras(pipe.loras(), item.loras); }))
    pipe.keep_int8_weights_packed_only();
  const std::string label = model_label(args.get("model"));
  if (communicator->is_main())
    std::cerr << items.size() << " prompts from " << args.get("prompts") << " over " << communicator->size()
              << (communicator->size() == 1 ? " process" : " processes") << ", seed " << base.seed << "\n";
  const auto outcome = pipeline::run_prompt_batch(
      pipe, items, *communicator, dir, args.get_flag("resume"),
      [&](const pipeline::BatchItem& item, const pipeline::GenerationResult& result) {
        const auto outputs = pipeline::batch_outputs(item, dir);
        const std::string scheduler = item.request.scheduler.empty() ? "model default" : item.request.scheduler;
        for (size_t i = 0; i < outputs.size(); ++i) {
          io::write_png(outputs[i], result.images[static_cast<int64_t>(i)],
                        {{"parameters", parameters_text(item.request, scheduler, label, dtype, static_cast<int>(i),
                                                        lora_records(item.loras))}});
          std::cout << outputs[i].string() << "\n";
        }
      },
      [&](const std::string& line) { std::cerr << line << "\n"; });
  if (communicator->is_main())
    std::cerr << "prompts: " << outcome.done << " made, " << outcome.skipped << " skipped (their pictures exist), "
              << outcome.failed << " failed\n";
  return outcome.failed > 0 ? 1 : 0;
}

// An --init-image / --mask file as uint8 [H, W, 3]; errors name the flag.
at::Tensor read_input_image(const std::string& file, const char* flag) {
  if (!fs::is_regular_file(file)) throw Error("tide generate: " + std::string(flag) + " " + file + " does not exist");
  if (!train::is_image_file(file))
    throw Error("tide generate: " + std::string(flag) + " " + file + " is not a .png, .jpg or .jpeg file");
  try {
    return train::read_rgb_image(file);
  } catch (const Error& e) {
    throw Error("tide generate: " + std::string(flag) + ": " + e.what());
  }
}

}  // namespace

int run_generate(int argc, char** argv) {
  Args args("generate", "tide generate --model MODEL --prompt TEXT [--init-image FILE [--mask FILE]] [options]",
            "Makes images from a text prompt with a Stable Diffusion model, the same images diffusers makes\n"
            "for the same seed and settings. With --init-image it redraws an image (diffusers' Img2Img\n"
            "pipelines), with --mask as well only the masked part (its Inpaint pipelines; inpainting models\n"
            "with a 9-channel UNet need both).");
  args.option("model", "MODEL",
              "a diffusers model folder, a single-file .safetensors checkpoint, or a Hugging Face Hub id "
              "(org/name[@revision], downloaded into the HF cache)")
      .option("prompt", "TEXT", "what to draw")
      .option("negative-prompt", "TEXT", "what to steer away from", "\"\"")
      .option("prompt-syntax", "plain|a1111",
              "how prompts are read: plain = as diffusers does (77 tokens at most, no weights; its pictures equal "
              "diffusers'); a1111 = as AUTOMATIC1111 does: (text) x1.1, [text] /1.1, (text:1.3), \\( escapes, BREAK, "
              "prompts of any length in chunks of 75 tokens",
              "plain")
      .option("clip-skip", "N",
              "read the prompt from the text encoder's N-th layer from the end, in A1111's numbering (1 = last layer, "
              "2 = the one before; diffusers' clip_skip is N-1). plain: applied to the prompt only, as diffusers "
              "does; a1111: to both prompts, on SD 1.x only (A1111 applies none to SD 2.x and SDXL)",
              "1")
      .option("steps", "N", "number of denoising steps", "50")
      .option("guidance", "G", "classifier-free guidance scale; 1 or less disables the unconditional pass", "7.5")
      .option("seed", "N", "random seed (a torch CPU generator seeded like diffusers)", "random, printed")
      .option("width", "PX", "image width, a multiple of the VAE scale factor", "the model's sample size")
      .option("height", "PX", "image height, a multiple of the VAE scale factor", "the model's sample size")
      .option("num-images", "N", "images per prompt, drawn as one batch", "1")
      .option("scheduler", "NAME", "one of: " + joined_scheduler_names(), "the model's own")
      .flag("karras", "use Karras sigmas (schedulers that support them)")
      .option("eta", "E", "ddim: eta, the weight of the noise drawn each step; tcd: gamma in [0, 1] (0.3 is TCD's "
              "usual value); 0 = deterministic", "0")
      .option("timestep-spacing", "leading|trailing|linspace",
              "how the steps are spread over the training timesteps (e.g. trailing for SDXL-Turbo); not for lcm/tcd",
              "the model's scheduler config")
      .option("taesd", "DIR",
              "decode with a tiny autoencoder (a diffusers AutoencoderTiny folder, e.g. madebyollin/taesd for SD "
              "1.x/2.x, taesdxl for SDXL): much faster, slightly less detail")
      .option("decoder", "DIR", "the same as --taesd")
      .option("original-size", "H,W", "SDXL micro-conditioning: original image size (height,width)", "the image size")
      .option("crop", "TOP,LEFT", "SDXL micro-conditioning: crop top-left corner", "0,0")
      .option("target-size", "H,W", "SDXL micro-conditioning: target image size (height,width)", "the image size")
      .option("init-image", "FILE",
              "image-to-image: start from this PNG or JPEG instead of pure noise; the output has its size rounded "
              "down to a multiple of the VAE factor (resized with Lanczos when --width/--height say otherwise)")
      .option("strength", "S",
              "with --init-image: how much of the schedule runs, in (0, 1]; 1 = ignore the image's content except "
              "where a mask keeps it",
              "0.8; SDXL: 0.3, SDXL inpainting 0.9999 (as diffusers)")
      .option("mask", "FILE",
              "inpainting: PNG or JPEG of the init image's size, white = repaint, black = keep (binarized at 50% "
              "grey); the output size is the model's default unless --width/--height are given")
      .option("mask-blur", "PX",
              "with --mask: Gaussian blur radius in pixels (Pillow's GaussianBlur) applied to the mask before it "
              "is binarized, which rounds its corners",
              "0")
      .option("output", "FILE.png", "output file; with several images FILE-0.png, FILE-1.png, ...", "out.png")
      .option("prompts", "FILE",
              "make many pictures: one prompt per line, or JSON lines with per-picture settings (prompt, "
              "negative_prompt, seed, width, height, steps, guidance, scheduler, num_images, clip_skip, name); written "
              "to --output-dir as NNNNN.png (line order) with seed = --seed + NNNNN unless a line sets them. Under "
              "mpirun the lines are shared out over the ranks; the same file gives the same pictures with any "
              "number of ranks. With --prompt-syntax a1111 a line's <lora:NAME:WEIGHT> tags apply to that line")
      .option("output-dir", "DIR", "with --prompts: the folder for the pictures (created)", "out")
      .flag("resume", "with --prompts: skip lines whose pictures already exist")
      .option("preview", "FILE.png",
              "write a preview of the first image after every step, replaced in place: watch it while the run goes "
              "on. With --decoder/--taesd the tiny autoencoder decodes it at full size; without, a fixed linear "
              "latent-to-RGB map gives a picture 1/8 of the image size at no cost")
      .option("output-latents", "FILE.npy",
              "also write the final latents [N, 4, H/8, W/8] as float32 .npy: what diffusers returns with "
              "output_type=\"latent\", to compare runs before the VAE and the 8-bit rounding")
      .option("variant", "NAME", "read weight files of this variant, e.g. fp16 (*.fp16.safetensors)")
      .option("tokenizer", "DIR", "single-file checkpoints: tokenizer folder (or a model folder with tokenizer/)",
              "the family's reference model on the Hub, cached or downloaded")
      .option("embedding", "FILE[:TOKEN]",
              "textual-inversion embedding (diffusers .safetensors/.bin, A1111 .safetensors/.pt, SDXL clip_l+clip_g "
              ".safetensors) named TOKEN "
              "(default: as stored); repeatable")
      .option("lora", "FILE[:WEIGHT]",
              "LoRA to merge into the UNet and text encoder(s) with this multiplier (default 1): kohya/A1111, "
              "diffusers/PEFT, LyCORIS LoCon/LoHa/LoKr .safetensors; FILE may be a name in --lora-dir; repeatable")
      .option("lora-dir", "DIR", "folder where --lora names and <lora:NAME:WEIGHT> prompt tags (--prompt-syntax a1111) "
              "are looked up (NAME or NAME.safetensors)")
      .option("loras", "DIR", "the same as --lora-dir")
      .option("vae-tiling", "auto|on|off",
              "decode the image in overlapping tiles (diffusers' enable_tiling) to bound the VAE's memory: on = "
              "whenever the latent is larger than one tile, auto = only for images of more than 1024x1024 pixels "
              "(default sizes decode untiled, as in diffusers), off = never",
              "auto")
      .option("cache-interval", "N",
              "DeepCache: run the whole UNet every N-th step only; the steps between reuse its deep features and "
              "run just its outermost layers (much faster steps, a somewhat different picture). 1 = off",
              "1")
      .option("tome", "RATIO",
              "Token Merging (tomesd): merge this fraction of the tokens before each self-attention of the blocks "
              "at most --tome-max-downsample below the latent size, and unmerge after it; faster attention, a "
              "slightly different picture. 0 = off; 0.3-0.5 are usual",
              "0")
      .option("tome-seed", "N", "seed of ToMe's random destination choices", "the generation seed")
      .flag("tome-no-rand", "ToMe: always take each cell's top-left token as destination")
      .option("tome-max-downsample", "M", "ToMe: only blocks whose tokens are at most M times downsampled (1, 2, 4, 8); "
              "with 1, SDXL has no block to merge", "1")
      .option("tome-sx", "N", "ToMe: width of the cell in which one destination token is chosen", "2")
      .option("tome-sy", "N", "ToMe: height of that cell", "2")
      .option("tome-merge", "LIST", "ToMe: where to merge, any of attn,crossattn,mlp", "attn")
      .option("weights", "FORMAT",
              "how the weights of linear layers and convolutions are kept in memory: f32, f16 or bf16 (widened "
              "layer by layer when used: about half the memory of f32, the same picture as f32 for an f16 file), or "
              "int8 (one scale per output channel; int8 arithmetic where the CPU has VNNI or AVX2, about a quarter "
              "of the memory, a slightly different picture; the VAE stays f16)",
              "f32; int8 for a folder written by tide quantize")
      .option("dtype", "TYPE",
              "the UNet's compute dtype: float32, or bf16 on CPUs with AVX512-BF16 or AMX (elsewhere float32, with a "
              "note); noise, scheduler, text encoders and VAE stay float32",
              "float32");
  add_thread_flags(args);
  if (!args.parse(argc, argv)) return 0;
  if (!args.has("model")) throw Error("tide generate: --model is required (a model folder, .safetensors file or Hub id)");
  if (!args.has("prompt") && !args.has("prompts")) throw Error("tide generate: --prompt (or --prompts FILE) is required");
  if (args.has("prompt") && args.has("prompts")) throw Error("tide generate: give --prompt or --prompts, not both");

  pipeline::GenerationRequest request;
  if (args.has("prompt")) request.prompt = args.get("prompt");
  if (args.has("negative-prompt")) request.negative_prompt = args.get("negative-prompt");
  const std::string syntax = args.get("prompt-syntax");
  if (syntax != "plain" && syntax != "a1111")
    throw Error("tide generate: --prompt-syntax must be plain or a1111, got '" + syntax + "'");
  request.prompt_syntax = syntax == "a1111" ? pipeline::PromptSyntax::kA1111 : pipeline::PromptSyntax::kPlain;
  request.clip_skip = args.get_int("clip-skip");
  request.cache_interval = args.get_int("cache-interval");
  request.tome.ratio = args.get_double("tome");
  if (args.has("tome-seed")) request.tome_seed = args.get_u64("tome-seed");
  request.tome.use_rand = !args.get_flag("tome-no-rand");
  request.tome.max_downsample = args.get_int("tome-max-downsample");
  request.tome.sx = args.get_int("tome-sx");
  request.tome.sy = args.get_int("tome-sy");
  {
    request.tome.merge_attn = request.tome.merge_crossattn = request.tome.merge_mlp = false;
    std::stringstream places(args.get("tome-merge"));
    for (std::string place; std::getline(places, place, ',');) {
      if (place == "attn") request.tome.merge_attn = true;
      else if (place == "crossattn") request.tome.merge_crossattn = true;
      else if (place == "mlp") request.tome.merge_mlp = true;
      else throw Error("tide generate: --tome-merge takes attn, crossattn and mlp, got '" + place + "'");
    }
  }
  request.steps = args.get_int("steps");
  request.guidance = args.get_double("guidance");
  request.num_images = args.get_int("num-images");
  if (args.has("width")) request.width = args.get_int("width");
  if (args.has("height")) request.height = args.get_int("height");
  request.scheduler = args.has("scheduler") ? args.get("scheduler") : "";
  if (!request.scheduler.empty()) {
    const auto names = schedulers::scheduler_names();
    if (std::find(names.begin(), names.end(), request.scheduler) == names.end())
      throw Error("tide generate: unknown scheduler '" + request.scheduler + "'; choose one of: " + joined_scheduler_names());
  }
  request.vae_tiling = models::parse_vae_tiling(args.get("vae-tiling"), "tide generate: --vae-tiling");
  request.scheduler_options.karras = args.get_flag("karras");
  request.scheduler_options.eta = args.get_double("eta");
  if (args.has("timestep-spacing")) request.scheduler_options.timestep_spacing = args.get("timestep-spacing");
  if (args.has("original-size")) std::tie(request.original_height, request.original_width) = int_pair(args, "original-size");
  if (args.has("crop")) std::tie(request.crop_top, request.crop_left) = int_pair(args, "crop");
  if (args.has("target-size")) std::tie(request.target_height, request.target_width) = int_pair(args, "target-size");
  if (args.has("init-image")) request.init_image = read_input_image(args.get("init-image"), "--init-image");
  if (args.has("mask")) {
    if (!args.has("init-image")) throw Error("tide generate: --mask needs --init-image (the image to inpaint)");
    request.mask = read_input_image(args.get("mask"), "--mask");
  }
  if (args.has("strength")) {
    if (!args.has("init-image")) throw Error("tide generate: --strength needs --init-image");
    request.strength = args.get_double("strength");
    if (!(*request.strength > 0 && *request.strength <= 1))
      throw Error("tide generate: --strength must be in (0, 1], got " + args.get("strength"));
  }
  if (args.has("mask-blur")) {
    if (!args.has("mask")) throw Error("tide generate: --mask-blur needs --mask");
    request.mask_blur = args.get_double("mask-blur");
    if (!(request.mask_blur >= 0)) throw Error("tide generate: --mask-blur must be a non-negative radius");
  }
  if (args.has("seed")) {
    request.seed = args.get_u64("seed");
  } else {
    request.seed = std::random_device{}() % 4294967296ull;
  }
  const fs::path output = args.get("output");
  if (output.extension() != ".png") throw Error("tide generate: --output must name a .png file, got " + output.string());
  const fs::path out_dir = output.parent_path().empty() ? fs::path(".") : output.parent_path();
  if (!fs::is_directory(out_dir)) throw Error("tide generate: output folder " + out_dir.string() + " does not exist");
  if (args.has("preview") && fs::path(args.get("preview")).extension() != ".png")
    throw Error("tide generate: --preview must name a .png file, got " + args.get("preview"));
  std::optional<fs::path> latents_output;
  if (args.has("output-latents")) {
    latents_output = fs::path(args.get("output-latents"));
    if (latents_output->extension() != ".npy")
      throw Error("tide generate: --output-latents must name a .npy file, got " + latents_output->string());
    const fs::path dir = latents_output->parent_path().empty() ? fs::path(".") : latents_output->parent_path();
    if (!fs::is_directory(dir)) throw Error("tide generate: output folder " + dir.string() + " does not exist");
  }

  std::string dtype_note;
  const at::ScalarType dtype = runtime::usable_compute_dtype(
      runtime::parse_compute_dtype(args.get("dtype"), "tide generate: --dtype"), &dtype_note);
  if (!dtype_note.empty()) std::cerr << dtype_note << "\n";

  const int threads = apply_thread_flags(args, "tide generate");
  runtime::hand_freed_memory_back_promptly();  // this process loads once, makes its pictures and ends
  pipeline::LoadOptions load;
  load.variant = args.has("variant") ? args.get("variant") : "";
  if (args.has("tokenizer")) load.tokenizer = args.get("tokenizer");
  if (args.has("weights")) load.weights = nn::parse_weight_format(args.get("weights"), "tide generate: --weights");
  std::optional<fs::path> lora_dir;
  if (args.has("lora-dir")) lora_dir = fs::path(args.get("lora-dir"));
  if (args.has("loras")) lora_dir = fs::path(args.get("loras"));
  std::vector<adapters::LoraSpec> loras;
  for (const auto& argument : args.get_all("lora")) loras.push_back(adapters::parse_lora_argument(argument, lora_dir));
  if (request.prompt_syntax == pipeline::PromptSyntax::kA1111) take_lora_tags(request.prompt, lora_dir, loras);
  pipeline::PipelineParts parts = pipeline::model_parts(args.get("model"), load);
  parts.load_vae_on_first_use = true;  // not beside the UNet's loop; never with --taesd
  auto pipe = pipeline::StableDiffusionPipeline::from_parts(std::move(parts));
  pipe->set_compute_settings({pipe->compute_settings().optimizations, threads, threads_adapt_to_load(args)});
  // Merged in float32 before the UNet changes dtype.
  LoraRecords lora_records;
  if (!loras.empty()) {
    pipe->set_loras(loras);
    for (const auto& l : loras)
      std::cerr << "LoRA " << adapters::lora_label(l) << " x" << l.weight << " from " << l.file.string() << "\n";
  }
  if (dtype != at::kFloat) pipe->set_unet_dtype(dtype);
  if (args.has("taesd") && args.has("decoder")) throw Error("tide generate: give --taesd or --decoder, not both");
  const std::string decoder = args.has("decoder") ? args.get("decoder") : args.has("taesd") ? args.get("taesd") : "";
  if (!decoder.empty()) pipe->set_tiny_autoencoder(models::load_autoencoder_tiny(decoder, load.variant));

  std::vector<std::string> embedding_tokens;
  for (const auto& argument : args.get_all("embedding")) {
    const auto [file, token] = text::parse_embedding_argument(argument);
    const auto embedding = text::read_embedding_file(file, token);
    pipe->install_embedding(embedding);
    embedding_tokens.push_back(embedding.token);
    std::cerr << "embedding " << embedding.token << " (" << embedding.vectors.size(0) << " vectors) from "
              << file.string() << "\n";
  }

  if (args.has("prompts")) return run_prompt_file(args, *pipe, request, embedding_tokens, dtype, lora_dir, lora_records);
  request = pipe->resolve(request);
  // Fail on a bad scheduler name before any work.
  const std::string scheduler_name = request.scheduler.empty() ? std::string("model default") : request.scheduler;
  pipe->make_scheduler(request);
  std::cerr << "seed " << request.seed << ", " << request.width << "x" << request.height << ", " << request.steps
            << " steps, " << thread_summary(args, threads) << ", UNet in " << runtime::compute_dtype_name(dtype) << "\n";
  const int f = pipe->vae_scale_factor();
  const auto& vae = pipe->vae_architecture();
  if (!pipe->has_tiny_autoencoder() && vae.tiles(request.height / f, request.width / f, request.vae_tiling))
    std::cerr << "VAE decode in tiles of " << vae.tile_sample_size() << "x" << vae.tile_sample_size()
              << " px (--vae-tiling " << models::vae_tiling_name(request.vae_tiling) << ")\n";

  runtime::Progress progress("denoising", request.steps);
  // A multi-vector token in the prompts stands for all its tokens (diffusers' maybe_convert_prompt).
  pipeline::GenerationRequest expanded = request;
  expanded.prompt = text::expand_multi_vector_tokens(request.prompt, pipe->tokenizer(), embedding_tokens);
  if (request.negative_prompt)
    expanded.negative_prompt = text::expand_multi_vector_tokens(*request.negative_prompt, pipe->tokenizer(), embedding_tokens);
  // One generation per run: once the prompts are encoded the text encoders only hold memory, and so does the
  // UNet once the loop is done.
  const pipeline::UNetConditioning conditioning = pipe->condition(expanded);
  pipe->release_text_encoders();
  pipe->release_unet_after_denoising();  // and the UNet before the VAE decode
  pipe->keep_int8_weights_packed_only();  // one copy of each int8 weight, not a plain and a packed one
  std::optional<fs::path> preview;
  if (args.has("preview")) preview = fs::path(args.get("preview"));
  auto result = pipe->generate(expanded, conditioning, [&](const pipeline::StepInfo& step) {
    if (step.index == 0) progress = runtime::Progress("denoising", step.total);
    if (preview) io::write_png(*preview, pipeline::step_preview_rgb8(*pipe, step.latents));
    progress.update(step.index + 1);
  });
  progress.finish();

  for (int i = 0; i < request.num_images; ++i) {
    const fs::path path = numbered(output, i, request.num_images);
    io::write_png(path, result.images[i],
                  {{"parameters", parameters_text(request, scheduler_name, model_label(args.get("model")), dtype, i, lora_records(loras))}});
    std::cout << path.string() << "\n";
  }
  if (latents_output) {
    io::write_npy(*latents_output, result.latents.contiguous());
    std::cout << latents_output->string() << "\n";
  }
  std::cerr << "done in " << runtime::format_duration(progress.elapsed_seconds()) << "\n";
  if (const auto* load = pipe->load_aware_threads(); load && load->fewest() != load->most())
    std::cerr << "ran with " << load->fewest() << " to " << load->most()
              << " threads: other processes kept cores busy part of the time\n";
  return 0;
}

}  // namespace tide::cli
