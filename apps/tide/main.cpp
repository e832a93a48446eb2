// tide: Stable Diffusion text-to-image in one binary.
#include <c10/util/Exception.h>

#include <cstring>
#include <iostream>

#include "commands.h"
#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"
#include "tide/version.h"

namespace {

constexpr const char* kUsage =
    "usage: tide <command> [options]\n"
    "\n"
    "Stable Diffusion on CPUs: the same image as diffusers for the same seed.\n"
    "\n"
    "commands:\n"
    "  generate   make images from a text prompt (tide generate --help)\n"
    "  bench      time text-to-image stage by stage, against plain libtorch (tide bench --help)\n"
    "  info       describe a model folder: components, parameters, dtypes, scheduler\n"
    "  pull       download a model from the Hugging Face Hub into the HF cache\n"
    "  convert    diffusers folder <-> original single-file checkpoint (.safetensors)\n"
    "  quantize   store a model's weights as int8, f16 or bf16 (a folder or one file tide loads directly)\n"
    "  train-ti   learn a textual-inversion embedding from images (data-parallel under mpirun)\n"
    "  serve      a web page and HTTP APIs (AUTOMATIC1111, OpenAI) over warm models (tide serve --help)\n"
    "  make-tiny  write a tiny random-weight model folder, to try tide without downloading a model\n"
    "\n"
    "Run 'tide <command> --help' for the options of a command.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    auto yes_no = [](bool with) { return with ? "yes" : "no (built without it)"; };
    std::cout << "tide " TIDE_VERSION "\n"
              << "Hub downloads (curl): " << yes_no(tide::built_with_curl()) << "\n"
              << "ranks under mpirun (MPI): " << yes_no(tide::built_with_mpi()) << "\n"
              << "JPEG inputs (libjpeg): " << yes_no(tide::built_with_jpeg()) << "\n";
    return 0;
  }
  const std::string command = argv[1];
  try {
    if (command == "generate") return tide::cli::run_generate(argc - 2, argv + 2);
    if (command == "bench") return tide::cli::run_bench(argc - 2, argv + 2);
    if (command == "info") return tide::cli::run_info(argc - 2, argv + 2);
    if (command == "pull") return tide::cli::run_pull(argc - 2, argv + 2);
    if (command == "convert") return tide::cli::run_convert(argc - 2, argv + 2);
    if (command == "quantize") return tide::cli::run_quantize(argc - 2, argv + 2);
    if (command == "train-ti") return tide::cli::run_train_ti(argc - 2, argv + 2);
    if (command == "serve") return tide::cli::run_serve(argc - 2, argv + 2);
    if (command == "make-tiny") return tide::cli::run_make_tiny(argc - 2, argv + 2);
    std::cerr << "error: unknown command '" << command << "'\n\n" << kUsage;
    return 2;
  } catch (const tide::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 1;
}
