// Writing outputs so that a crash or an error never leaves a half-written file behind:
// the bytes go to a temporary name in the same folder, then a rename makes them visible.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace tide::io {

// Writes `bytes` to `path` atomically.
void write_file_atomically(const std::filesystem::path& path, const std::string& bytes);

// Calls `write(temporary_path)`, then renames the temporary to `path`; on any exception the
// temporary is removed and the exception propagates.
void write_atomically(const std::filesystem::path& path,
                      const std::function<void(const std::filesystem::path&)>& write);

}  // namespace tide::io
