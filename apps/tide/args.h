// Command-line flags: `--name value`, `--name=value`, boolean `--name`; `--flag_name` and `--flag-name`
// are the same flag. Unknown flags, missing or malformed values are errors that say what is expected.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tide::cli {

class Args {
 public:
  Args(std::string command, std::string usage, std::string summary);

  // A flag taking a value; `fallback` is shown in --help ("" shows nothing).
  Args& option(const std::string& name, const std::string& value_name, const std::string& help,
               const std::string& fallback = "");
  Args& flag(const std::string& name, const std::string& help);  // boolean
  Args& positional(const std::string& name, const std::string& help);

  // Throws tide::Error on bad input. Returns false when --help was asked (help already printed).
  bool parse(int argc, char** argv);

  std::string help() const;
  bool has(const std::string& name) const;
  std::string get(const std::string& name) const;  // the given value, else the fallback
  std::vector<std::string> get_all(const std::string& name) const;
  int get_int(const std::string& name) const;
  double get_double(const std::string& name) const;
  uint64_t get_u64(const std::string& name) const;
  bool get_flag(const std::string& name) const { return has(name); }
  std::optional<std::string> positional_value(const std::string& name) const;

 private:
  struct Spec {
    std::string name, value_name, help, fallback;
    bool is_flag;
  };
  const Spec& spec(const std::string& name) const;
  std::string command_, usage_, summary_;
  std::vector<Spec> specs_;
  std::vector<std::pair<std::string, std::string>> positional_specs_;
  std::map<std::string, std::vector<std::string>> values_;
  std::map<std::string, std::string> positionals_;
};

}  // namespace tide::cli
