// `tide serve` as a child process, for the CLI tests: started on a free port, which it prints, and stopped with a signal.
#pragma once
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <vector>

namespace tide::testing {

// A running `tide serve`; its stdout is read up to the "listening on" line, which names the port.
class ServeProcess {
 public:
  explicit ServeProcess(const std::vector<std::string>& args) {
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(TIDE_BINARY));
      argv.push_back(const_cast<char*>("serve"));
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(TIDE_BINARY, argv.data());
      _exit(127);
    }
    close(out[1]);
    // Read until the line with the address (or the end, when it failed to start).
    std::string seen;
    char c;
    while (read(out[0], &c, 1) == 1) {
      seen += c;
      std::smatch m;
      if (c == '\n' && std::regex_search(seen, m, std::regex("listening on http://127\\.0\\.0\\.1:([0-9]+)/"))) {
        port_ = std::stoi(m[1]);
        break;
      }
    }
    stdout_ = out[0];
  }
  ~ServeProcess() {
    if (pid_ > 0 && !waited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_ >= 0) close(stdout_);
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Sends `signal` and returns the exit code (-1: killed by a signal).
  int stop(int signal) {
    kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    waited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0, stdout_ = -1;
  bool waited_ = false;
};

}  // namespace tide::testing
