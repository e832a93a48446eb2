#include "tide/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tide/io/atomic_file.h"
#include "tide/io/tensor_shape_limits.h"
#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::io {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

}  // namespace

at::ScalarType safetensors_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  throw Error("unsupported safetensors dtype '" + name + "'");
}

std::string safetensors_dtype_name(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return d.name;
  throw Error(std::string("dtype ") + c10::toString(type) + " cannot be stored in safetensors");
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path) {
  const std::string where = path.string();
  int fd = ::open(where.c_str(), O_RDONLY);
  if (fd < 0) throw Error("cannot open " + where + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(where + " is not a regular file");
  }
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    throw Error(where + ": file is " + std::to_string(map_size_) + " bytes, too short for a safetensors header");
  }
  void* map = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw Error("cannot map " + where + ": " + std::strerror(errno));
  map_ = static_cast<const uint8_t*>(map);

  try {
    uint64_t header_len = 0;
    std::memcpy(&header_len, map_, 8);
    if (header_len > kMaxHeaderBytes || header_len > map_size_ - 8)
      throw Error(where + ": header length " + std::to_string(header_len) + " exceeds the file size (" +
                  std::to_string(map_size_) + " bytes): truncated or not a safetensors file");
    data_ = map_ + 8 + header_len;
    const uint64_t data_size = map_size_ - 8 - header_len;

    nlohmann::json header;
    try {
      header = nlohmann::json::parse(map_ + 8, map_ + 8 + header_len);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": header is not valid JSON (" + e.what() + ")");
    }
    if (!header.is_object()) throw Error(where + ": header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it->is_object()) throw Error(where + ": __metadata__ is not an object");
        for (auto m = it->begin(); m != it->end(); ++m)
          if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
        continue;
      }
      const std::string what = where + ": tensor '" + it.key() + "'";
      const auto& v = *it;
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        throw Error(what + " lacks dtype, shape or data_offsets");
      TensorEntry e;
      e.name = it.key();
      try {
        e.dtype = safetensors_dtype(v["dtype"].get<std::string>());
        e.shape = v["shape"].get<std::vector<int64_t>>();
        auto offsets = v["data_offsets"].get<std::vector<uint64_t>>();
        if (offsets.size() != 2) throw Error("data_offsets must hold two numbers");
        e.begin = offsets[0];
        e.end = offsets[1];
      } catch (const nlohmann::json::exception& ex) {
        throw Error(what + ": malformed entry (" + ex.what() + ")");
      } catch (const Error& ex) {
        throw Error(what + ": " + ex.what());
      }
      uint64_t numel = 1;
      for (int64_t d : e.shape) {
        if (d < 0) throw Error(what + " has a negative dimension in shape " + shape_string(e.shape));
        numel *= static_cast<uint64_t>(d);
      }
      if (!tensor_shape_fits(e.shape, static_cast<int64_t>(c10::elementSize(e.dtype))))
        throw Error(what + ": shape " + shape_string(e.shape) + " is too large for any tensor");
      const uint64_t expected = numel * c10::elementSize(e.dtype);
      if (e.begin > e.end || e.end > data_size)
        throw Error(what + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                    ") lie outside the " + std::to_string(data_size) + " data bytes (truncated file?)");
      if (e.end - e.begin != expected)
        throw Error(what + ": " + std::to_string(e.end - e.begin) + " bytes stored but dtype " +
                    v["dtype"].get<std::string>() + " × shape " + shape_string(e.shape) + " needs " +
                    std::to_string(expected));
      entries_.push_back(std::move(e));
    }

    std::vector<const TensorEntry*> by_offset;
    for (const auto& e : entries_) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorEntry* a, const TensorEntry* b) { return a->begin < b->begin; });
    const TensorEntry* furthest = nullptr;  // the entry reaching furthest so far
    for (const TensorEntry* e : by_offset) {
      if (e->end == e->begin) continue;  // empty tensors occupy no bytes
      if (furthest && e->begin < furthest->end)
        throw Error(where + ": tensors '" + furthest->name + "' and '" + e->name + "' overlap in the file");
      if (!furthest || e->end > furthest->end) furthest = e;
    }
    for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(map_), map_size_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(path_.string() + " has no tensor '" + name + "'");
  return entries_[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorEntry& e = entry(name);
  at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
  // memcpy rather than from_blob: the data section need not be aligned for the dtype.
  if (e.end > e.begin) std::memcpy(t.data_ptr(), data_ + e.begin, e.end - e.begin);
  // The copied pages leave this process's resident memory (they stay in the page cache and fault back in
  // if read again): otherwise every tensor read so far counts twice until the file is closed, and loading
  // a 4 GB checkpoint peaks at 8 GB.
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(data_ + e.begin) + page - 1) / page * page;
  const uintptr_t last = reinterpret_cast<uintptr_t>(data_ + e.end) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return t;
}

void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor t = tensor.detach().cpu().contiguous();
    nlohmann::ordered_json entry;
    entry["dtype"] = safetensors_dtype_name(t.scalar_type());
    entry["shape"] = t.sizes().vec();
    entry["data_offsets"] = {offset, offset + t.nbytes()};
    if (header.contains(name)) throw Error("write_safetensors: duplicate tensor name '" + name + "'");
    header[name] = entry;
    offset += t.nbytes();
    contiguous.push_back(t);
  }
  std::string json = header.dump();
  while (json.size() % 8 != 0) json += ' ';  // keep the data section 8-byte aligned
  write_atomically(path, [&](const std::filesystem::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot create " + tmp.string());
    const uint64_t len = json.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    for (const auto& t : contiguous)
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    out.close();
    if (!out) throw Error("cannot write " + tmp.string() + " (disk full?)");
  });
}

}  // namespace tide::io
