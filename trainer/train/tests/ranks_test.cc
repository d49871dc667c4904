// gradwatch-train --nproc 2 as a user runs it: two rank processes on a tiny U-Net, no monitor.
// The ranks end with equal parameters whatever each injected; a signal stops both at one step;
// a rank that dies ends the job with an error and takes the other rank with it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// gradwatch-train with its stderr on a pipe that the test reads.
class Trainer {
 public:
  explicit Trainer(std::vector<std::string> args) {
    args.insert(args.begin(), GRADWATCH_TRAIN);
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
  }
  ~Trainer() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }

  pid_t pid() const { return pid_; }
  const std::string& output() const { return output_; }

  // Reads stderr until `pattern` matches it (true) or 60 s pass or it closes (false).
  bool WaitFor(const std::regex& pattern, std::smatch* match = nullptr) {
    const auto deadline = Clock::now() + 60s;
    std::smatch m;
    while (!std::regex_search(output_, m, pattern)) {
      if (Clock::now() > deadline || !Read(deadline)) return false;
    }
    if (match) *match = m;
    return true;
  }

  // The exit code (128 + the signal for a signal), or -1 after 60 s. Drains stderr meanwhile.
  int Wait() {
    const auto deadline = Clock::now() + 60s;
    while (Read(deadline)) {
    }
    int status = 0;
    while (Clock::now() < deadline) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      ::poll(nullptr, 0, 20);  // the pipe is closed: the process is about to be reaped
    }
    return -1;
  }

 private:
  // One read of stderr; false at its end or the deadline.
  bool Read(Clock::time_point deadline) {
    pollfd p{out_, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(out_, buf, sizeof buf);
    if (n <= 0) return false;
    output_.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  std::string output_;
};

class TrainRanks : public ::testing::Test {
 protected:
  void SetUp() override {
#if !__has_include(<gloo/config.h>)
    GTEST_SKIP() << "this build has no Gloo (libgloo-dev): gradwatch-train cannot form a job";
#endif
    dir_ = fs::temp_directory_path() /
           ("gw-ranks-" + std::to_string(::getpid()) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "config.json") << R"({"model": {"depth": 2, "base": 4},
        "data": {"images": 12, "size": 16}, "eval_every": 0, "log_every": 0, "threads": 1,
        "checkpoint_every": 4, "no_monitor": true})";
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::vector<std::string> Args(const std::string& steps) {
    return {"--config", (dir_ / "config.json").string(), "--nproc", "2", "--batch", "4", "--steps", steps,
            "--summary-json", (dir_ / "summary.json").string(), "--nproc-grace", "2"};
  }

  nlohmann::json Summary(const std::string& name) {
    std::ifstream in(dir_ / name);
    EXPECT_TRUE(in.good()) << name << " missing";
    return in.good() ? nlohmann::json::parse(in) : nlohmann::json::object();
  }

  fs::path dir_;
};

TEST_F(TrainRanks, two_ranks_train_their_shards_and_end_with_equal_parameters) {
  auto args = Args("12");
  for (const char* fault : {"--fault", "grad_spike@5,rank=1,factor=50", "--fault", "stall@2,rank=0,seconds=0.2"}) {
    args.push_back(fault);
  }
  Trainer t(args);
  ASSERT_EQ(t.Wait(), 0) << t.output();
  nlohmann::json r0 = Summary("summary.json"), r1 = Summary("summary-rank1.json");
  EXPECT_EQ(r0["rank"], 0);
  EXPECT_EQ(r1["rank"], 1);
  EXPECT_EQ(r0["world_size"], 2);
  EXPECT_EQ(r0["run_id"], r1["run_id"]);
  EXPECT_EQ(r0["steps_run"], 12);
  EXPECT_EQ(r1["steps_run"], 12);
  EXPECT_EQ(r0["collapsed"], r1["collapsed"]);
  EXPECT_EQ(r0["parameter_checksum"]["fnv1a64"], r1["parameter_checksum"]["fnv1a64"]);
  EXPECT_EQ(r0["parameter_checksum"]["sum"], r1["parameter_checksum"]["sum"]);
  EXPECT_EQ(r0["loss_curve"], r1["loss_curve"]) << "the run's loss, the same on every rank";
  // Each fault hit its own rank only, and said so under that rank's name.
  EXPECT_NE(t.output().find("gradwatch-train[rank 1]: step 6: injected gradient x50"), std::string::npos) << t.output();
  EXPECT_EQ(t.output().find("gradwatch-train[rank 0]: step 6: injected"), std::string::npos) << t.output();
  EXPECT_NE(t.output().find("gradwatch-train[rank 0]: step 3: stalling 0.2 s"), std::string::npos) << t.output();
  EXPECT_EQ(t.output().find("gradwatch-train[rank 1]: step 3: stalling"), std::string::npos) << t.output();
}

TEST_F(TrainRanks, a_signal_stops_every_rank_at_the_same_step) {
  Trainer t(Args("1000000"));
  ASSERT_TRUE(t.WaitFor(std::regex(R"(rank 0\]: run \S+)"))) << t.output();
  ASSERT_TRUE(t.WaitFor(std::regex(R"(rank 1\]: run \S+)"))) << t.output();
  ::kill(t.pid(), SIGTERM);
  EXPECT_EQ(t.Wait(), 128 + SIGTERM) << t.output();
  nlohmann::json r0 = Summary("summary.json"), r1 = Summary("summary-rank1.json");
  EXPECT_EQ(r0["steps_run"], r1["steps_run"]);
  EXPECT_EQ(r0["stopped_by_signal"], SIGTERM);
  EXPECT_EQ(r1["stopped_by_signal"], SIGTERM);
  EXPECT_EQ(r0["parameter_checksum"], r1["parameter_checksum"]);
}

TEST_F(TrainRanks, a_rank_that_dies_ends_the_job_with_an_error_and_the_other_rank_too) {
  auto args = Args("1000000");
  args.push_back("--fault");
  args.push_back("hang@2,rank=1");
  Trainer t(args);
  std::smatch started;
  ASSERT_TRUE(t.WaitFor(std::regex(R"(started rank 0 of 2 \(pid (\d+))"), &started)) << t.output();
  const pid_t rank0 = std::stoi(started[1]);
  ASSERT_TRUE(t.WaitFor(std::regex(R"(started rank 1 of 2 \(pid (\d+))"), &started)) << t.output();
  const pid_t rank1 = std::stoi(started[1]);
  ASSERT_TRUE(t.WaitFor(std::regex(R"(rank 1\]: step 3: hanging)"))) << t.output();
  ::kill(rank1, SIGKILL);
  const int code = t.Wait();
  EXPECT_NE(code, 0) << t.output();
  EXPECT_NE(code, -1) << "the job did not end: " << t.output();
  EXPECT_NE(t.output().find("rank 1 was killed by"), std::string::npos) << t.output();
  EXPECT_EQ(::kill(rank0, 0), -1) << "rank 0 is still there";
  EXPECT_FALSE(fs::exists(dir_ / "summary.json")) << "a failed job writes no summary";
}

TEST_F(TrainRanks, a_batch_that_does_not_split_is_refused_before_any_rank_starts) {
  auto args = Args("5");
  args[5] = "5";  // --batch 5 over 2 ranks
  Trainer t(args);
  EXPECT_EQ(t.Wait(), 2);
  EXPECT_NE(t.output().find("batch: 5 items do not split evenly over --nproc 2 ranks"), std::string::npos) << t.output();
  EXPECT_EQ(t.output().find("started rank"), std::string::npos);
}

}  // namespace
