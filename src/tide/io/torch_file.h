// Files written by torch.save (PyTorch >= 1.6): a zip archive (stored, not compressed; ZIP64 for large
// checkpoints) holding `<name>/data.pkl` and one record per storage, `<name>/data/<key>`. Read with the
// restricted unpickler (io/pickle.h); tensors are views of the memory-mapped file.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tide/io/pickle.h"

namespace tide::io {

// True when the file starts like a zip archive (torch.save's format).
bool is_torch_zip_file(const std::filesystem::path& path);

// The object a torch.save file holds. Malformed archives and pickles, compressed records, big-endian
// files and globals outside the allow-list are tide::Errors naming the file.
PickleRef load_torch_file(const std::filesystem::path& path);

// The tensors of a state dict: the top-level dict, or its "state_dict" / "module" entry when it has one
// (Lightning and some trainers wrap it); entries that are not tensors are skipped. Keys in file order.
std::vector<std::pair<std::string, at::Tensor>> state_dict_tensors(const PickleRef& root, const std::string& where);

}  // namespace tide::io
