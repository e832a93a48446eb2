// Where a model comes from: the --model argument resolved to a local diffusers folder.
#pragma once
#include <filesystem>
#include <string>

namespace tide::pipeline {

// A local folder is used as it is. Anything else is an error that says what was looked for.
std::filesystem::path resolve_model(const std::string& model);

}  // namespace tide::pipeline
