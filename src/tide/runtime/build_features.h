// What this build of tide can do beyond the core: the optional dependencies chosen when it was configured
// (CMake options TIDE_WITH_MPI, TIDE_WITH_JPEG, TIDE_WITH_CURL). Each function is defined by the one source
// file that CMake picked for that dependency: the real implementation or the one that explains its absence.
#pragma once

namespace tide {

bool built_with_mpi();   // data-parallel runs under mpirun (train-ti, generate --prompts)
bool built_with_jpeg();  // JPEG images as inputs (img2img, inpainting masks, training images, the server)
bool built_with_curl();  // downloads from the Hugging Face Hub (a Hub id as --model, tide pull)

}  // namespace tide
