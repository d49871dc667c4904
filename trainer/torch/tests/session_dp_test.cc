// Data-parallel Sessions: ranks as threads of this process, meeting in an in-memory store (Gloo
// over loopback), each training a small MLP on its shard of a global batch. Every command
// takes effect on every rank at the same step and the ranks' parameters stay identical; two
// ranks on halves of a global batch follow the one-rank run on the whole batch.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <functional>
#include <thread>

#include "gradwatch/torch/grad_stats.h"
#include "gradwatch/torch/group.h"
#include "gradwatch/torch/session.h"

namespace gradwatch::torchmon {
namespace {

constexpr int64_t kGlobalBatch = 8;

torch::nn::Sequential MakeNet() {
  return torch::nn::Sequential(torch::nn::Linear(8, 16), torch::nn::Tanh(), torch::nn::Linear(16, 1));
}

// The global batch of `step`: the same on every rank, whatever the global torch seed.
std::pair<at::Tensor, at::Tensor> GlobalBatch(uint64_t step) {
  at::Generator gen = at::detail::createCPUGenerator(1000 + step);
  at::Tensor x = at::randn({kGlobalBatch, 8}, gen);
  at::Tensor y = (x.sum(1, true) * 0.5).sin() + 0.1 * at::randn({kGlobalBatch, 1}, gen);
  return {x, y};
}

// What one rank saw, for the test thread to compare.
struct RankResult {
  int rank = 0;
  uint64_t last_step = 0;  // the last step trained
  bool stopped = false, stopped_by_command = false;
  std::vector<AppliedCommand> applied;
  std::vector<double> losses;  // Session::last_loss() per step
  ParamChecksum checksum;
  uint64_t skipped = 0;
  double lr_scale = 0;
  // On the first step: this rank's own gradient norm and loss before BeforeUpdate, and the
  // averaged gradient's norm measured after it, with what the Session reported.
  double own_norm = 0, own_loss = 0, averaged_norm = 0, session_global = 0, session_local = 0;
  std::vector<double> rank_losses, rank_norms;
};

// Called on each rank after BeginStep(step), before BeforeUpdate: queue commands, request a stop.
using Hook = std::function<void(int rank, uint64_t step, Session&)>;

struct JobOptions {
  int world = 2;
  uint64_t steps = 30;
  Mode mode = Mode::kGuard;
  uint32_t checkpoint_every = 5;
  Hook hook;
};

RankResult TrainRank(const std::shared_ptr<Group>& group, int rank, int world, const JobOptions& job,
                     const std::vector<at::Tensor>& init) {
  torch::nn::Sequential net = MakeNet();
  {
    torch::NoGradGuard no_grad;
    auto params = net->parameters();
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(rank == 0 ? init[i] : init[i] * 3 + 1);
  }
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  SessionOptions o;
  o.mode = job.mode;
  o.checkpoint_every = job.checkpoint_every;
  o.log = false;
  o.group = group;
  Session session(*net, optimizer, o);
  RankResult out;
  out.rank = rank;
  const int64_t shard = kGlobalBatch / world;
  for (uint64_t step = 1; step <= job.steps; ++step) {
    if (!session.BeginStep(step)) break;
    session.SetLearningRate(0.05);
    auto [x, y] = GlobalBatch(step);
    x = x.narrow(0, rank * shard, shard);
    y = y.narrow(0, rank * shard, shard);
    optimizer.zero_grad();
    at::Tensor loss = torch::mse_loss(net->forward(x), y);
    loss.backward();
    if (job.hook) job.hook(rank, step, session);
    if (step == 1) {
      out.own_norm = ComputeGradStats(net->parameters()).global_norm;
      out.own_loss = loss.item<double>();
    }
    const bool update = session.BeforeUpdate({step, 0, loss.item<double>()});
    if (step == 1) {
      out.averaged_norm = ComputeGradStats(net->parameters()).global_norm;
      out.session_global = session.last_grad_norm();
      out.session_local = session.last_local_grad_norm();
      out.rank_losses = session.last_rank_losses();
      out.rank_norms = session.last_rank_grad_norms();
    }
    if (update) optimizer.step();
    session.AfterUpdate();
    out.losses.push_back(session.last_loss());
    out.last_step = step;
  }
  out.stopped = session.stopped();
  out.stopped_by_command = session.stopped_by_command();
  out.applied = session.applied_commands();
  out.checksum = ChecksumOf(net->parameters());
  out.skipped = session.updates_skipped();
  out.lr_scale = session.lr_scale();
  return out;
}

// The job: `world` ranks as threads (or this thread alone for one rank), from the same initial
// parameters on rank 0 (the others start elsewhere: the Session's broadcast must fix that).
std::vector<RankResult> RunJob(const JobOptions& job) {
  torch::set_num_threads(1);
  torch::manual_seed(11);
  std::vector<at::Tensor> init;
  for (const auto& p : MakeNet()->parameters()) init.push_back(p.detach().clone());
  std::vector<RankResult> results(static_cast<size_t>(job.world));
  if (job.world == 1) {
    results[0] = TrainRank(nullptr, 0, 1, job, init);
    return results;
  }
  auto store = Group::InProcessStore();
  std::vector<std::exception_ptr> errors(results.size());
  std::vector<std::thread> threads;
  for (int r = 0; r < job.world; ++r) {
    threads.emplace_back([&, r] {
      try {
        GroupOptions go;
        go.timeout = std::chrono::seconds(60);  // a broken test fails instead of hanging
        auto group = Group::Join(store, r, job.world, go);
        results[static_cast<size_t>(r)] = TrainRank(group, r, job.world, job, init);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return results;
}

Command Make(const std::string& id, Command::Action action) {
  Command c;
  c.id = id;
  c.action = action;
  c.issued_by = "test";
  return c;
}

class DataParallelSession : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Group::Available()) GTEST_SKIP() << "this build has no Gloo (libgloo-dev)";
  }
};

TEST_F(DataParallelSession, ranks_hold_equal_parameters_after_clip_lr_skip_and_rollback) {
  JobOptions job;
  job.mode = Mode::kGated;  // no monitor: rank 0's fallback (proceed) is broadcast every step
  job.hook = [](int rank, uint64_t step, Session& s) {
    if (rank == 1 && step == 2) s.QueueCommand(Make("c-ignored", Command::Action::kStop));  // rank 0's only
    if (rank != 0) return;
    if (step == 3) {
      Command clip = Make("c-clip", Command::Action::kClip);
      clip.clip = {Clip::Kind::kNorm, 0.05};
      s.QueueCommand(clip);
    }
    if (step == 8) {
      Command lr = Make("c-lr", Command::Action::kScaleLr);
      lr.lr_scale = 0.5;
      s.QueueCommand(lr);
    }
    if (step == 12) {
      Command skip = Make("c-skip", Command::Action::kSkip);
      skip.skip_count = 2;
      s.QueueCommand(skip);
    }
    if (step == 17) s.QueueCommand(Make("c-rollback-newest", Command::Action::kRollback));
    if (step == 21) {
      Command rollback = Make("c-rollback-5", Command::Action::kRollback);
      rollback.rollback_to = 5;
      s.QueueCommand(rollback);
    }
  };
  auto ranks = RunJob(job);
  ASSERT_EQ(ranks.size(), 2u);
  for (const auto& r : ranks) {
    EXPECT_EQ(r.last_step, 30u) << "rank " << r.rank << " stopped: rank 1's own stop must be ignored";
    ASSERT_EQ(r.applied.size(), 5u) << "rank " << r.rank;
    EXPECT_EQ(r.skipped, 2u);
    EXPECT_DOUBLE_EQ(r.lr_scale, 0.5);
  }
  const std::vector<uint64_t> queued_at = {3, 8, 12, 17, 21};
  for (size_t i = 0; i < 5; ++i) {
    const AppliedCommand &a = ranks[0].applied[i], &b = ranks[1].applied[i];
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.step, queued_at[i] + 1) << a.id << ": announced in the all-reduce, applied at the next step";
    EXPECT_EQ(a.step, b.step) << a.id;
    EXPECT_TRUE(a.applied) << a.id << ": " << a.detail;
    EXPECT_EQ(a.applied, b.applied) << a.id;
    EXPECT_EQ(a.detail, b.detail) << a.id;
  }
  EXPECT_EQ(ranks[0].applied[3].detail, "restored the checkpoint of step 15");
  EXPECT_EQ(ranks[0].applied[4].detail, "restored the checkpoint of step 5");
  EXPECT_EQ(ranks[0].checksum.hash, ranks[1].checksum.hash);
  EXPECT_EQ(ranks[0].checksum.sum, ranks[1].checksum.sum);
  EXPECT_EQ(ranks[0].losses, ranks[1].losses) << "the run's loss is the same on every rank";
}

TEST_F(DataParallelSession, rank_zero_gathers_every_ranks_loss_and_local_norm_with_the_all_reduce) {
  JobOptions job;
  job.steps = 1;
  auto ranks = RunJob(job);
  for (const auto& r : ranks) {
    ASSERT_EQ(r.rank_losses.size(), 2u);
    ASSERT_EQ(r.rank_norms.size(), 2u);
    EXPECT_NEAR(r.session_local, r.own_norm, 1e-6 * r.own_norm) << "rank " << r.rank;
    EXPECT_NEAR(r.session_global, r.averaged_norm, 1e-6 * r.averaged_norm) << "rank " << r.rank;
    for (const auto& other : ranks) {
      EXPECT_NEAR(r.rank_losses[other.rank], other.own_loss, 1e-6 * other.own_loss);
      EXPECT_NEAR(r.rank_norms[other.rank], other.own_norm, 1e-6 * other.own_norm);
    }
  }
  EXPECT_NE(ranks[0].own_norm, ranks[1].own_norm) << "different shards, different gradients";
  EXPECT_EQ(ranks[0].session_global, ranks[1].session_global);
  EXPECT_LT(ranks[0].session_global, std::max(ranks[0].own_norm, ranks[1].own_norm));
}

TEST_F(DataParallelSession, a_stop_requested_on_one_rank_ends_every_rank_at_the_same_step) {
  JobOptions job;
  job.hook = [](int rank, uint64_t step, Session& s) {
    if (rank == 1 && step == 5) s.RequestStop();  // e.g. SIGTERM reached rank 1 first
  };
  auto ranks = RunJob(job);
  for (const auto& r : ranks) {
    EXPECT_EQ(r.last_step, 5u) << "rank " << r.rank;
    EXPECT_TRUE(r.stopped);
    EXPECT_FALSE(r.stopped_by_command);
  }
  EXPECT_EQ(ranks[0].checksum.hash, ranks[1].checksum.hash);
}

TEST_F(DataParallelSession, a_stop_command_ends_every_rank_at_the_step_it_names) {
  JobOptions job;
  job.hook = [](int rank, uint64_t step, Session& s) {
    if (rank == 0 && step == 4) s.QueueCommand(Make("c-stop", Command::Action::kStop));
  };
  auto ranks = RunJob(job);
  for (const auto& r : ranks) {
    EXPECT_EQ(r.last_step, 4u) << "rank " << r.rank;
    EXPECT_TRUE(r.stopped_by_command);
    ASSERT_EQ(r.applied.size(), 1u);
    EXPECT_EQ(r.applied[0].step, 5u);
  }
}

// Gradient averaging over equal shards of one global batch is the one-rank gradient of that
// batch up to float32 rounding: the loss curves agree to kRelTolerance (measured here: 1.2e-6
// at most over 60 steps of SGD with momentum; float32 sums in a different order).
TEST_F(DataParallelSession, two_ranks_follow_the_one_rank_loss_curve_on_equal_global_batches) {
  constexpr double kRelTolerance = 1e-5;
  JobOptions one;
  one.world = 1;
  one.steps = 60;
  JobOptions two = one;
  two.world = 2;
  auto single = RunJob(one);
  auto pair = RunJob(two);
  ASSERT_EQ(single[0].losses.size(), 60u);
  ASSERT_EQ(pair[0].losses.size(), 60u);
  double worst = 0;
  for (size_t i = 0; i < 60; ++i) {
    worst = std::max(worst, std::abs(pair[0].losses[i] - single[0].losses[i]) / std::abs(single[0].losses[i]));
  }
  std::printf("2-rank vs 1-rank loss curve, 60 steps: max relative difference %.3g (first %.6f, last %.6f)\n",
              worst, single[0].losses.front(), single[0].losses.back());
  EXPECT_LT(worst, kRelTolerance);
  EXPECT_LT(single[0].losses.back(), 0.5 * single[0].losses.front()) << "the model must learn for this to mean anything";
  EXPECT_NEAR(pair[0].checksum.sum, single[0].checksum.sum, 1e-4 * std::abs(single[0].checksum.sum));
}

// A free port on 127.0.0.1, bound then released.
uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST(Group, ranks_meet_over_tcp_from_the_environment_and_reduce_and_broadcast) {
  if (!Group::Available()) GTEST_SKIP() << "this build has no Gloo (libgloo-dev)";
  const uint16_t port = FreePort();
  std::vector<at::Tensor> sums(2);
  std::vector<std::string> words(2), empties(2, "left over");
  std::vector<std::exception_ptr> errors(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      try {
        DistEnv env;
        env.rank = r;
        env.world_size = 2;
        env.master_addr = "127.0.0.1";
        env.master_port = port;
        GroupOptions go;
        go.timeout = std::chrono::seconds(60);
        auto group = Group::Join(env, go);
        at::Tensor t = torch::full({3}, double(r + 1));
        group->AllReduceSum(t);
        sums[r] = t;
        words[r] = r == 0 ? "from rank 0" : "";
        group->Broadcast(&words[r], 0);
        if (r == 0) empties[r].clear();
        group->Broadcast(&empties[r], 0);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(torch::equal(sums[r], torch::full({3}, 3.0))) << sums[r];
    EXPECT_EQ(words[r], "from rank 0");
    EXPECT_EQ(empties[r], "");
  }
}

TEST(Group, checksums_tell_parameters_apart) {
  auto a = MakeNet()->parameters();
  std::vector<at::Tensor> b;
  for (const auto& p : a) b.push_back(p.detach().clone());
  EXPECT_EQ(ChecksumOf(a).hash, ChecksumOf(b).hash);
  EXPECT_EQ(ChecksumOf(a).sum, ChecksumOf(b).sum);
  b[0].view(-1)[0] += 1e-6;
  EXPECT_NE(ChecksumOf(a).hash, ChecksumOf(b).hash);
}

}  // namespace
}  // namespace gradwatch::torchmon
