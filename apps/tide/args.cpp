#include "args.h"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "tide/runtime/error.h"

namespace tide::cli {
namespace {

std::string normalize(std::string name) {
  std::replace(name.begin(), name.end(), '_', '-');
  return name;
}

}  // namespace

Args::Args(std::string command, std::string usage, std::string summary)
    : command_(std::move(command)), usage_(std::move(usage)), summary_(std::move(summary)) {
  flag("help", "show this help and exit");
}

Args& Args::option(const std::string& name, const std::string& value_name, const std::string& help,
                   const std::string& fallback) {
  specs_.push_back({normalize(name), value_name, help, fallback, false});
  return *this;
}

Args& Args::flag(const std::string& name, const std::string& help) {
  specs_.push_back({normalize(name), "", help, "", true});
  return *this;
}

Args& Args::positional(const std::string& name, const std::string& help) {
  positional_specs_.emplace_back(name, help);
  return *this;
}

const Args::Spec& Args::spec(const std::string& name) const {
  const std::string n = normalize(name);
  for (const auto& s : specs_)
    if (s.name == n) return s;
  throw Error("internal: flag --" + n + " was never declared");
}

bool Args::parse(int argc, char** argv) {
  size_t next_positional = 0;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      if (next_positional >= positional_specs_.size())
        throw Error("tide " + command_ + ": unexpected argument '" + arg + "' (see tide " + command_ + " --help)");
      positionals_[positional_specs_[next_positional++].first] = arg;
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    name = normalize(name);
    auto it = std::find_if(specs_.begin(), specs_.end(), [&](const Spec& s) { return s.name == name; });
    if (it == specs_.end()) throw Error("tide " + command_ + ": unknown flag --" + name + " (see tide " + command_ + " --help)");
    if (it->is_flag) {
      if (value && *value != "true" && *value != "1")
        throw Error("tide " + command_ + ": --" + name + " takes no value");
      values_[name].push_back("true");
      continue;
    }
    if (!value) {
      if (i + 1 >= argc) throw Error("tide " + command_ + ": --" + name + " needs a value (" + it->value_name + ")");
      value = argv[++i];
    }
    values_[name].push_back(*value);
  }
  if (has("help")) {
    std::cout << help();
    return false;
  }
  if (next_positional < positional_specs_.size())
    throw Error("tide " + command_ + ": missing " + positional_specs_[next_positional].first + " (usage: " + usage_ + ")");
  return true;
}

std::string Args::help() const {
  std::ostringstream out;
  out << "usage: " << usage_ << "\n\n" << summary_ << "\n";
  if (!positional_specs_.empty()) {
    out << "\narguments:\n";
    for (const auto& [name, text] : positional_specs_) out << "  " << name << "\n      " << text << "\n";
  }
  out << "\noptions:\n";
  for (const auto& s : specs_) {
    out << "  --" << s.name << (s.is_flag ? "" : " " + s.value_name) << "\n      " << s.help;
    if (!s.fallback.empty()) out << " (default: " << s.fallback << ")";
    out << "\n";
  }
  return out.str();
}

bool Args::has(const std::string& name) const { return values_.count(normalize(name)) != 0; }

std::string Args::get(const std::string& name) const {
  auto it = values_.find(normalize(name));
  if (it != values_.end()) return it->second.back();
  return spec(name).fallback;
}

std::vector<std::string> Args::get_all(const std::string& name) const {
  auto it = values_.find(normalize(name));
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

int Args::get_int(const std::string& name) const {
  const std::string v = get(name);
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || n < INT32_MIN || n > INT32_MAX)
    throw Error("tide " + command_ + ": --" + normalize(name) + " expects an integer, got '" + v + "'");
  return static_cast<int>(n);
}

uint64_t Args::get_u64(const std::string& name) const {
  const std::string v = get(name);
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || *end != '\0' || errno != 0)
    throw Error("tide " + command_ + ": --" + normalize(name) + " expects a non-negative integer, got '" + v + "'");
  return n;
}

double Args::get_double(const std::string& name) const {
  const std::string v = get(name);
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno != 0 || !std::isfinite(d))
    throw Error("tide " + command_ + ": --" + normalize(name) + " expects a finite number, got '" + v + "'");
  return d;
}

std::optional<std::string> Args::positional_value(const std::string& name) const {
  auto it = positionals_.find(name);
  if (it == positionals_.end()) return std::nullopt;
  return it->second;
}

}  // namespace tide::cli
