// A restricted unpickler for the files torch.save writes (.pt, .ckpt, .bin): it understands the pickle
// opcodes such files use and a short allow-list of globals (dicts, tensor and parameter rebuilds, storage
// types, and a few classes found in checkpoints, kept as inert objects). It never runs code: any other
// global is refused with its name. Python's own pickle would import and call whatever a file names.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tide::io {

struct PickleValue;
using PickleRef = std::shared_ptr<PickleValue>;

struct PickleValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kBytes, kList, kTuple, kDict, kGlobal, kObject, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t integer = 0;      // kBool, kInt
  double number = 0;        // kFloat
  std::string text;         // kString, kBytes; kGlobal and kObject: "module.name"
  std::vector<PickleRef> items;                          // kList, kTuple; kObject: its constructor arguments
  std::vector<std::pair<PickleRef, PickleRef>> entries;  // kDict, in insertion order
  PickleRef state;          // kObject: what BUILD gave it (e.g. a module's __dict__)
  at::Tensor tensor;        // kTensor; kStorage: the storage as a 1-D tensor

  bool is(Kind k) const { return kind == k; }
  // The value of a string key in a dict, or nullptr.
  PickleRef find(const std::string& key) const;
};

// Persistent ids (torch's storages): called with the BINPERSID tuple ('storage', storage type global, key,
// location, numel); returns a kStorage value.
using PersistentLoad = std::function<PickleRef(const PickleValue& pid)>;

// Reads one pickle. `where` names the file in error messages. Throws tide::Error on anything malformed,
// unsupported or not allowed.
PickleRef unpickle(const uint8_t* data, size_t size, const PersistentLoad& persistent_load, const std::string& where);

}  // namespace tide::io
