// Runs the real pmapctl binary (fork/exec) with arguments and standard
// input, collecting its standard output, standard error and exit code.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

namespace pmapctl_test {

struct Ran {
  int code = -1;  // the exit code; 128 + N for a death by signal N
  std::string out, err;
};

// Runs argv[0] (a path) with the rest as its arguments, input on its
// standard input, and env added to this process's environment.
inline Ran run_program(std::vector<std::string> argv_s, const std::string& input = "",
                       const std::vector<std::string>& env = {}) {
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
    return {};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s = env;
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  Ran ran;
  // Feed stdin and drain both outputs together, so no pipe fills up.
  std::size_t fed = 0;
  if (input.empty()) close(in[1]);
  bool in_open = !input.empty(), out_open = true, err_open = true;
  signal(SIGPIPE, SIG_IGN);
  while (out_open || err_open || in_open) {
    pollfd fds[3] = {{out_open ? out[0] : -1, POLLIN, 0},
                     {err_open ? err[0] : -1, POLLIN, 0},
                     {in_open ? in[1] : -1, POLLOUT, 0}};
    if (poll(fds, 3, -1) < 0) continue;
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
      if (!fds[i].revents) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? ran.out : ran.err).append(buf, static_cast<std::size_t>(n));
      } else {
        close(fds[i].fd);
        (i == 0 ? out_open : err_open) = false;
      }
    }
    if (in_open && fds[2].revents) {
      const ssize_t n = write(in[1], input.data() + fed, input.size() - fed);
      if (n > 0) fed += static_cast<std::size_t>(n);
      if (n <= 0 || fed == input.size()) {
        close(in[1]);
        in_open = false;
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ran.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return ran;
}

// pmapctl with these arguments.
inline Ran run(const std::vector<std::string>& args, const std::string& input = "",
               const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv = {PMAPCTL};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(std::move(argv), input, env);
}

// A shell command run by script(1) on a pseudo-terminal of its own (its
// standard input, output and error); what that terminal showed.
inline std::string run_script(const std::string& command, const std::vector<std::string>& env) {
  return run_program({"/usr/bin/script", "-qec", command, "/dev/null"}, "", env).out;
}

// A program left running (pmapctl watch), its standard output and error
// read as they come.
class Running {
 public:
  explicit Running(std::vector<std::string> argv_s) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return;
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      dup2(err[1], 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    fds_[0] = out[0];
    fds_[1] = err[0];
  }
  ~Running() {
    if (pid_ > 0) stop(SIGKILL);
    for (int fd : fds_)
      if (fd >= 0) close(fd);
  }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;

  // Reads until `needle` is in out (stream 1) or err (stream 2). False if
  // the program ends first, or after `seconds` (a failure, not a wait).
  bool wait_for(int stream, const std::string& needle, int seconds = 60) {
    std::string& text = stream == 1 ? out : err;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (text.find(needle) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd fds[2] = {{fds_[0], POLLIN, 0}, {fds_[1], POLLIN, 0}};
      if (poll(fds, 2, static_cast<int>(left.count())) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (!fds[i].revents) continue;
        char buf[4096];
        const ssize_t n = read(fds_[i], buf, sizeof buf);
        if (n <= 0) return false;  // it ended
        (i == 0 ? out : err).append(buf, static_cast<std::size_t>(n));
      }
    }
    return true;
  }

  // Sends sig and waits for the end: the exit code (128 + N for signal N).
  int stop(int sig) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string out, err;

 private:
  pid_t pid_ = -1;
  int fds_[2] = {-1, -1};
};

}  // namespace pmapctl_test
