// The local launcher against real programs (never a shell): output capture, signals to
// the job's group, and finding a process again after a restart.
#include "gradwatch/jobs/launcher.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace gradwatch::jobs {
namespace {

namespace fs = std::filesystem;

class LocalLauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gw-launcher-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  LaunchSpec Spec(const std::string& program, std::vector<std::string> args) {
    LaunchSpec s;
    s.program = program;
    s.args = std::move(args);
    s.env = {"PATH=/usr/bin:/bin", "GREETING=from-the-env"};
    s.workdir = dir_.string();
    s.log_path = (dir_ / "train.log").string();
    return s;
  }

  // Waits for a real process to end (bounded); the test asserts the outcome, not the time.
  static ExitStatus WaitEnd(Process& p) {
    for (int i = 0; i < 2000; ++i) {
      if (auto s = p.Poll()) return *s;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "process " << p.pid() << " did not end";
    return {};
  }

  std::string Log() {
    std::ifstream in(dir_ / "train.log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  fs::path dir_;
  LocalLauncher launcher_;
};

TEST_F(LocalLauncherTest, captures_output_and_the_exit_code_with_the_given_environment_and_folder) {
  // /usr/bin/env prints its environment: the job sees exactly the environment it was given.
  auto p = launcher_.Start(Spec("/usr/bin/env", {}));
  ExitStatus s = WaitEnd(*p);
  EXPECT_TRUE(s.known);
  EXPECT_EQ(s.code, 0);
  EXPECT_NE(Log().find("GREETING=from-the-env"), std::string::npos) << Log();
  EXPECT_EQ(Log().find("HOME="), std::string::npos) << "the monitor's own environment leaked";

  auto pwd = launcher_.Start(Spec("/bin/pwd", {}));
  WaitEnd(*pwd);
  EXPECT_NE(Log().find(dir_.string()), std::string::npos);
}

TEST_F(LocalLauncherTest, arguments_are_not_interpreted_by_a_shell) {
  auto p = launcher_.Start(Spec("/bin/echo", {"$(id)", ";", "`uname`"}));
  WaitEnd(*p);
  EXPECT_EQ(Log(), "$(id) ; `uname`\n");
}

TEST_F(LocalLauncherTest, a_job_of_several_ranks_has_the_trainer_start_them_with_nproc) {
  LaunchSpec spec = Spec("/bin/echo", {"--config", "c.json"});
  spec.resources.set_nodes(1);
  spec.resources.set_tasks_per_node(4);
  WaitEnd(*launcher_.Start(spec));
  spec.resources.set_tasks_per_node(1);
  WaitEnd(*launcher_.Start(spec));
  EXPECT_EQ(Log(), "--config c.json --nproc 4\n--config c.json\n");
}

TEST_F(LocalLauncherTest, reports_a_non_zero_exit) {
  auto p = launcher_.Start(Spec("/bin/false", {}));
  EXPECT_EQ(WaitEnd(*p).code, 1);
}

TEST_F(LocalLauncherTest, sigterm_reaches_the_job_even_when_the_monitor_blocks_it) {
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, &old);  // as gradwatchd does, for sigwait
  auto p = launcher_.Start(Spec("/bin/sleep", {"30"}));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  EXPECT_FALSE(p->Poll());
  p->Signal(SIGTERM);
  ExitStatus s = WaitEnd(*p);
  EXPECT_EQ(s.signal, SIGTERM);
  EXPECT_EQ(s.code, 128 + SIGTERM);
}

TEST_F(LocalLauncherTest, adopts_a_process_by_its_identity_until_it_ends) {
  auto p = launcher_.Start(Spec("/bin/sleep", {"30"}));
  auto adopted = launcher_.Adopt(p->identity());
  ASSERT_NE(adopted, nullptr);
  EXPECT_EQ(adopted->pid(), p->pid());
  EXPECT_FALSE(adopted->Poll());
  EXPECT_EQ(launcher_.Adopt(std::to_string(p->pid()) + ":1"), nullptr) << "same pid, another start time";
  adopted->Signal(SIGKILL);
  WaitEnd(*p);  // reaped by its parent, this process
  EXPECT_EQ(launcher_.Adopt(p->identity()), nullptr);
  ExitStatus s = *adopted->Poll();
  EXPECT_FALSE(s.known) << "an adopted process's exit code is not ours to see";
  EXPECT_EQ(launcher_.Adopt("garbage"), nullptr);
}

TEST_F(LocalLauncherTest, a_missing_program_is_a_clear_error) {
  try {
    launcher_.Start(Spec("/nonexistent/gradwatch-train", {}));
    FAIL() << "started a missing program";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/gradwatch-train"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gradwatch::jobs
