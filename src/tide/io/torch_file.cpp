#include "tide/io/torch_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>

#include "tide/runtime/error.h"

namespace tide::io {
namespace fs = std::filesystem;
namespace {

// A read-only mapping of a whole file, shared by the tensors that view it.
struct Mapping {
  const uint8_t* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data) munmap(const_cast<uint8_t*>(data), size);
  }
};

std::shared_ptr<Mapping> map_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error("cannot open " + path.string());
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("cannot read " + path.string());
  }
  auto m = std::make_shared<Mapping>();
  m->size = static_cast<size_t>(st.st_size);
  if (m->size > 0) {
    void* p = mmap(nullptr, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);  // copy on write
    if (p == MAP_FAILED) {
      ::close(fd);
      throw Error("cannot map " + path.string());
    }
    m->data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

// The records of a zip archive: name -> (offset of the data, size). Only stored (uncompressed) records,
// which is what torch.save writes.
class ZipIndex {
 public:
  ZipIndex(const Mapping& m, const std::string& where) : m_(m), where_(where) {
    const uint8_t* d = m.data;
    const size_t n = m.size;
    if (n < 22) fail("too short for a zip archive");
    // End of central directory: the last signature within the final 64 KiB + 22 bytes.
    size_t eocd = std::string::npos;
    for (size_t i = n - 22 + 1; i-- > 0 && n - i <= 65557;)
      if (le(d + i, 4) == 0x06054b50) {
        eocd = i;
        break;
      }
    if (eocd == std::string::npos) fail("no zip end-of-directory record");
    uint64_t count = le(d + eocd + 10, 2), cd_size = le(d + eocd + 12, 4), cd_offset = le(d + eocd + 16, 4);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {  // ZIP64
      if (eocd < 20 || le(d + eocd - 20, 4) != 0x07064b50) fail("a ZIP64 archive without its locator");
      const uint64_t z = le(d + eocd - 20 + 8, 8);
      if (z > n - 56 || le(d + z, 4) != 0x06064b50) fail("a bad ZIP64 end-of-directory record");
      count = le(d + z + 32, 8);
      cd_size = le(d + z + 40, 8);
      cd_offset = le(d + z + 48, 8);
    }
    if (cd_offset > n || cd_size > n - cd_offset) fail("the central directory lies outside the file");
    size_t p = cd_offset;
    const size_t cd_end = cd_offset + cd_size;
    for (uint64_t e = 0; e < count; ++e) {
      if (p + 46 > cd_end || le(d + p, 4) != 0x02014b50) fail("a bad central directory entry");
      const uint64_t method = le(d + p + 10, 2);
      uint64_t size = le(d + p + 24, 4), compressed = le(d + p + 20, 4), local = le(d + p + 42, 4);
      const size_t name_len = le(d + p + 28, 2), extra_len = le(d + p + 30, 2), comment_len = le(d + p + 32, 2);
      if (p + 46 + name_len + extra_len + comment_len > cd_end) fail("a bad central directory entry");
      const std::string name(reinterpret_cast<const char*>(d + p + 46), name_len);
      // ZIP64 extra field: 64-bit values for the fields stored as 0xFFFFFFFF, in this order.
      for (size_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
        const uint64_t id = le(d + x, 2), len = le(d + x + 2, 2);
        if (x + 4 + len > p + 46 + name_len + extra_len) fail("a bad zip extra field");
        if (id == 1) {
          size_t q = x + 4;
          auto next = [&](uint64_t& field) {
            if (field != 0xFFFFFFFF) return;
            if (q + 8 > x + 4 + len) fail("a short ZIP64 extra field");
            field = le(d + q, 8);
            q += 8;
          };
          next(size);
          next(compressed);
          next(local);
        }
        x += 4 + len;
      }
      if (local > n - 30 || le(d + local, 4) != 0x04034b50) fail("record " + name + " has no local header");
      const uint64_t start = local + 30 + le(d + local + 26, 2) + le(d + local + 28, 2);
      if (start > n || size > n - start) fail("record " + name + " reaches past the end of the file");
      if (method != 0 || compressed != size)
        fail("record " + name + " is compressed; torch.save writes stored records");
      records_[name] = {start, size};
      p += 46 + name_len + extra_len + comment_len;
    }
  }

  // The record whose name ends with `suffix` under the archive's top folder.
  std::pair<uint64_t, uint64_t> find(const std::string& name) const {
    const auto it = records_.find(name);
    if (it == records_.end()) fail("the archive has no record " + name);
    return it->second;
  }
  const std::map<std::string, std::pair<uint64_t, uint64_t>>& records() const { return records_; }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw Error(where_ + ": " + what); }
  const Mapping& m_;
  std::string where_;
  std::map<std::string, std::pair<uint64_t, uint64_t>> records_;
};

at::ScalarType storage_dtype(const std::string& type, const std::string& where) {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat}, {"torch.HalfStorage", at::kHalf},   {"torch.BFloat16Storage", at::kBFloat16},
      {"torch.DoubleStorage", at::kDouble}, {"torch.LongStorage", at::kLong}, {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort}, {"torch.CharStorage", at::kChar},   {"torch.ByteStorage", at::kByte},
      {"torch.BoolStorage", at::kBool}};
  const auto it = types.find(type);
  if (it == types.end()) throw Error(where + ": storage type " + type + " is not supported");
  return it->second;
}

}  // namespace

bool is_torch_zip_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "PK\x03\x04", 4) == 0;
}

PickleRef load_torch_file(const fs::path& path) {
  const std::string where = path.string();
  auto mapping = map_file(path);
  const ZipIndex zip(*mapping, where);
  // The pickle is `<top>/data.pkl`; storages are `<top>/data/<key>`.
  std::string top;
  for (const auto& [name, unused] : zip.records()) {
    const size_t slash = name.find('/');
    if (slash != std::string::npos && name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      top = name.substr(0, slash);
      break;
    }
  }
  if (top.empty()) throw Error(where + ": a zip archive without data.pkl: not a torch.save file");
  const auto byteorder = zip.records().find(top + "/byteorder");
  if (byteorder != zip.records().end()) {
    const std::string order(reinterpret_cast<const char*>(mapping->data + byteorder->second.first),
                            byteorder->second.second);
    if (order != "little") throw Error(where + ": saved on a " + order + "-endian machine; tide reads little-endian files");
  }

  const PersistentLoad storages = [&](const PickleValue& pid) -> PickleRef {
    using Kind = PickleValue::Kind;
    if (!pid.is(Kind::kTuple) || pid.items.size() < 5 || !pid.items[0]->is(Kind::kString) ||
        pid.items[0]->text != "storage" || !pid.items[1]->is(Kind::kGlobal) || !pid.items[2]->is(Kind::kString) ||
        !pid.items[4]->is(Kind::kInt) || pid.items[4]->integer < 0)
      throw Error(where + ": a persistent id that is not a tensor storage");
    const at::ScalarType dtype = storage_dtype(pid.items[1]->text, where);
    const int64_t numel = pid.items[4]->integer;
    const auto [offset, size] = zip.find(top + "/data/" + pid.items[2]->text);
    const uint64_t element = c10::elementSize(dtype);
    if (static_cast<uint64_t>(numel) > size / element)
      throw Error(where + ": storage " + pid.items[2]->text + " holds " + std::to_string(size) + " bytes, less than " +
                  std::to_string(numel) + " elements");
    auto v = std::make_shared<PickleValue>();
    v->kind = Kind::kStorage;
    void* data = const_cast<uint8_t*>(mapping->data + offset);
    // The tensor keeps the mapping alive; writes to it (copy on write) never reach the file.
    v->tensor = at::from_blob(data, {numel}, [mapping](void*) {}, at::TensorOptions().dtype(dtype));
    return v;
  };
  const auto [offset, size] = zip.find(top + "/data.pkl");
  return unpickle(mapping->data + offset, size, storages, where);
}

std::vector<std::pair<std::string, at::Tensor>> state_dict_tensors(const PickleRef& root, const std::string& where) {
  using Kind = PickleValue::Kind;
  PickleRef dict = root;
  for (const char* wrapper : {"state_dict", "module"}) {
    if (dict && dict->is(Kind::kDict)) {
      const PickleRef inner = dict->find(wrapper);
      if (inner && inner->is(Kind::kDict)) dict = inner;
    }
  }
  if (!dict || !dict->is(Kind::kDict)) throw Error(where + ": holds no dict of tensors (a state dict)");
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [key, value] : dict->entries)
    if (key->is(Kind::kString) && value->is(Kind::kTensor)) out.emplace_back(key->text, value->tensor);
  if (out.empty()) throw Error(where + ": its dict holds no tensors");
  return out;
}

}  // namespace tide::io
