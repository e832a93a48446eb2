#include "tide/io/npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "tide/io/atomic_file.h"
#include "tide/runtime/error.h"

namespace tide::io {
namespace {

struct DescrType {
  const char* descr;
  at::ScalarType type;
};
constexpr DescrType kDescrTypes[] = {
    {"<f4", at::kFloat}, {"<f8", at::kDouble}, {"<f2", at::kHalf}, {"<i8", at::kLong},
    {"<i4", at::kInt},   {"|u1", at::kByte},   {"|b1", at::kBool},
};

std::string header_value(const std::string& header, const std::string& key, const std::filesystem::path& path) {
  auto pos = header.find("'" + key + "'");
  if (pos == std::string::npos) throw Error(path.string() + ": npy header has no '" + key + "'");
  pos = header.find(':', pos);
  auto start = header.find_first_not_of(' ', pos + 1);
  if (header[start] == '(') return header.substr(start + 1, header.find(')', start) - start - 1);
  auto end = header.find_first_of(",}", start);
  return header.substr(start, end - start);
}

}  // namespace

at::Tensor read_npy(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path.string());
  char magic[8];
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error(path.string() + ": not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t len16 = 0;
    in.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  if (!in || header_len > (1u << 20)) throw Error(path.string() + ": bad npy header length");
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (!in) throw Error(path.string() + ": truncated npy header");

  std::string descr = header_value(header, "descr", path);
  descr = descr.substr(1, descr.size() - 2);  // strip quotes
  if (header_value(header, "fortran_order", path) != "False")
    throw Error(path.string() + ": Fortran-ordered arrays are not supported");
  std::optional<at::ScalarType> type;
  for (const auto& d : kDescrTypes)
    if (descr == d.descr) type = d.type;
  if (!type) throw Error(path.string() + ": unsupported npy dtype " + descr);

  std::vector<int64_t> shape;
  std::stringstream dims(header_value(header, "shape", path));
  std::string dim;
  while (std::getline(dims, dim, ','))
    if (dim.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(dim));

  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(*type));
  const auto bytes = static_cast<std::streamsize>(tensor.nbytes());
  in.read(static_cast<char*>(tensor.data_ptr()), bytes);
  if (in.gcount() != bytes) throw Error(path.string() + ": truncated npy data");
  return tensor;
}

void write_npy(const std::filesystem::path& path, const at::Tensor& tensor) {
  at::Tensor t = tensor.cpu().contiguous();
  const char* descr = nullptr;
  for (const auto& d : kDescrTypes)
    if (t.scalar_type() == d.type) descr = d.descr;
  if (!descr) throw Error("write_npy: unsupported dtype for " + path.string());
  std::string shape;  // numpy's repr: "()", "(5,)", "(2, 3)"
  for (int64_t i = 0; i < t.dim(); ++i) shape += (i ? ", " : "") + std::to_string(t.size(i));
  if (t.dim() == 1) shape += ",";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + shape + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  uint16_t len = static_cast<uint16_t>(header.size());
  out.append(reinterpret_cast<const char*>(&len), 2);
  out += header;
  out.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
  write_file_atomically(path, out);
}

}  // namespace tide::io
