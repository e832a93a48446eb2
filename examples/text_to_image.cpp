// Text to image with the tide library: load a model (folder, single file or Hub id), generate, save a PNG.
//   text_to_image MODEL "a prompt" out.png [seed]
#include <cstdlib>
#include <iostream>

#include "tide/io/image.h"
#include "tide/pipeline/model_source.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/error.h"
#include "tide/runtime/threads.h"
#include "tide/version.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: text_to_image MODEL PROMPT OUT.png [SEED]   (tide " TIDE_VERSION ")\n";
    return 2;
  }
  try {
    tide::runtime::configure_threads(0);  // one thread per physical core
    auto pipe = tide::pipeline::StableDiffusionPipeline::from_parts(tide::pipeline::model_parts(argv[1]));
    tide::pipeline::GenerationRequest request;
    request.prompt = argv[2];
    request.steps = 20;
    request.seed = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 0;
    const auto result = pipe->generate(request, [](const tide::pipeline::StepInfo& step) {
      std::cerr << "\rstep " << step.index + 1 << "/" << step.total << std::flush;
    });
    std::cerr << "\n";
    tide::io::write_png(argv[3], result.images[0], {{"parameters", request.prompt}});
    std::cout << argv[3] << "\n";
    return 0;
  } catch (const tide::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
