// The fakes and fixture the Jobs tests share: a launcher whose processes the test ends by
// hand, a temp folder per test, an injected clock and a captured log.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gradwatch/jobs/jobs.h"

namespace gradwatch::jobs::fakes {

namespace fs = std::filesystem;

// Processes the test ends by hand; they remember the signals they got.
struct FakeState {
  std::optional<ExitStatus> exit;
  std::vector<int> signals;
  LaunchSpec spec;
};

class FakeProcess final : public Process {
 public:
  FakeProcess(int64_t pid, std::shared_ptr<FakeState> state) : pid_(pid), state_(std::move(state)) {}
  int64_t pid() const override { return pid_; }
  std::string identity() const override { return "fake:" + std::to_string(pid_); }
  std::optional<ExitStatus> Poll() override { return state_->exit; }
  void Signal(int signal) override { state_->signals.push_back(signal); }

 private:
  int64_t pid_;
  std::shared_ptr<FakeState> state_;
};

class FakeLauncher final : public Launcher {
 public:
  std::unique_ptr<Process> Start(const LaunchSpec& spec) override {
    if (fail) throw std::runtime_error("cannot start " + spec.program + ": No such file or directory");
    auto state = std::make_shared<FakeState>();
    state->spec = spec;
    int64_t pid = 1000 + static_cast<int64_t>(started.size());
    started.push_back(state);
    by_identity["fake:" + std::to_string(pid)] = {pid, state};
    return std::make_unique<FakeProcess>(pid, state);
  }
  std::unique_ptr<Process> Adopt(const std::string& identity) override {
    auto it = by_identity.find(identity);
    if (it == by_identity.end() || it->second.second->exit) return nullptr;
    return std::make_unique<FakeProcess>(it->second.first, it->second.second);
  }
  std::string name() const override { return "fake"; }

  bool fail = false;
  std::vector<std::shared_ptr<FakeState>> started;
  std::map<std::string, std::pair<int64_t, std::shared_ptr<FakeState>>> by_identity;
};

class JobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gw-jobs-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  JobsOptions Options(size_t max_running = 2) {
    JobsOptions o;
    o.dir = dir_.string();
    o.trainer = "/opt/gradwatch/bin/gradwatch-train";
    o.monitor_address = "127.0.0.1:7070";
    o.max_running = max_running;
    o.default_grace_ms = 5000;
    o.env = {"PATH=/usr/bin"};
    o.now_ms = [this] { return now_; };
    o.log = [this](const std::string& line) { logged_.push_back(line); };
    return o;
  }

  void Log(const std::string& job, const std::string& text) { std::ofstream(dir_ / job / "train.log") << text; }

  fs::path dir_;
  std::vector<std::string> logged_;
  int64_t now_ = 1'700'000'000'000;
  FakeLauncher launcher_;
};

}  // namespace gradwatch::jobs::fakes
