// tide make-tiny: writes a tiny random-weight model folder, to try tide right after building.
#include <filesystem>
#include <iostream>

#include "args.h"
#include "commands.h"
#include "tide/pipeline/tiny_model.h"
#include "tide/runtime/error.h"

namespace tide::cli {

int run_make_tiny(int argc, char** argv) {
  Args args("make-tiny", "tide make-tiny DIR [--seed N]",
            "Writes a tiny Stable Diffusion 1.x-style diffusers folder with random weights (about 2 MB): every\n"
            "component a real model has, small enough to generate a 32x32 picture in a second. Its pictures are\n"
            "noise; use it to try tide or a front end without downloading a model.");
  args.positional("DIR", "the folder to create (a folder that already holds a model is left as it is)")
      .option("seed", "N", "seed of the random weights", "0");
  if (!args.parse(argc, argv)) return 0;
  const auto dir = args.positional_value("DIR");
  if (!dir) throw Error("tide make-tiny: give the folder to create, e.g. tide make-tiny ./tiny-sd");
  const uint64_t seed = args.get_u64("seed");
  // Running the same command twice (the README's first line) keeps the model made the first time.
  if (std::filesystem::exists(std::filesystem::path(*dir) / "model_index.json")) {
    std::cout << *dir << "\n";
    std::cerr << *dir << " already holds a model: left as it is\n";
    return 0;
  }
  pipeline::write_tiny_pipeline(*dir, seed);
  std::cout << *dir << "\n";
  std::cerr << "wrote a tiny random-weight model to " << *dir << "; try:\n  tide generate --model " << *dir
            << " --prompt \"a yellow robot\" --seed 42 --output robot.png\n";
  return 0;
}

}  // namespace tide::cli
