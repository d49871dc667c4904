// bench/trainer_overhead: what monitoring costs a training step, measured in one process.
//
// Two identical U-Net trainings (the default config) step in interleaved blocks: one
// with a gradwatch Session reporting to an in-process monitor on loopback, one with a
// Session that has no monitor (gradient statistics still computed, nothing sent). The
// ratio of their median step times is `overhead_ratio`. `norm_speedup` compares the
// fused gradient statistics (one _foreach_norm, one copy) with a .item() per parameter.
// The data-parallel arm (CPU only) does the same in a 2-rank Gloo job (two ranks as threads
// of this process, each with its shard of a global batch of 8: 4 items a rank, the single
// arms' work per process): per rank a telemetry-off and a telemetry-on Session (each pair of
// ranks one job with its own group), stepped in interleaved blocks; `dp2_overhead_ratio` is
// rank 0's median step time on / off. It also times the collectives the Session adds: the
// gradient all-reduce's buffer, the length-only broadcast a step without commands would cost
// had the commands not ridden in the all-reduce, and a command's two broadcasts.
// Prints one JSON line. Flags: --steps N (per arm, default 600), --block N (default 20),
// --dp-steps N (per data-parallel arm, default 300, 0 = none), --device cpu|cuda|auto,
// --threads N, --monitor HOST:PORT (a running gradwatchd instead of one in-process).
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "gradwatch/torch/grad_stats.h"
#include "gradwatch/torch/group.h"
#include "monitor_fixture.h"
#include "gradwatch/torch/session.h"
#include "train/data.h"
#include "train/jaccard.h"
#include "train/sampler.h"
#include "train/unet.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace gradwatch;

struct Arm {
  Arm(torch::Device device, const std::string& monitor, const std::string& run_id,
      std::shared_ptr<torchmon::Group> group = nullptr)
      : model(train::UNetOptions{}),
        optimizer(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).nesterov(true)) {
    model->to(device);
    torchmon::SessionOptions o;
    o.monitor = monitor;
    o.run_id = run_id;
    o.mode = torchmon::Mode::kObserve;
    o.log = false;
    o.group = std::move(group);
    session = std::make_unique<torchmon::Session>(*model, optimizer, o);
  }
  train::UNet model;
  torch::optim::SGD optimizer;
  std::unique_ptr<torchmon::Session> session;
  uint64_t step = 0;
  std::vector<double> seconds;
};

template <typename Sampler>
void Step(Arm& arm, const train::Dataset& data, Sampler& sampler, torch::Device device) {
  auto start = Clock::now();
  ++arm.step;
  arm.session->BeginStep(arm.step);
  const std::vector<int64_t> items = sampler.next();
  auto index = torch::tensor(items, torch::kLong).to(device);
  auto x = data.images.index_select(0, index), y = data.masks.index_select(0, index);
  arm.session->SetLearningRate(0.01);
  arm.optimizer.zero_grad();
  auto pred = arm.model->forward(x);
  auto loss = train::jaccard_coef_loss(y, pred);
  loss.backward();
  auto m = train::segmentation_metrics(y, pred.detach());
  if (arm.session->BeforeUpdate({arm.step, 0, loss.item<double>(), m.jaccard_soft, m.jaccard_hard, m.accuracy})) {
    arm.optimizer.step();
  }
  arm.session->AfterUpdate();
  if (device.is_cuda()) torch::cuda::synchronize();
  arm.seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Median seconds of `fn` over `n` calls.
template <typename Fn>
double TimeIt(int n, Fn fn, torch::Device device) {
  std::vector<double> t;
  for (int i = 0; i < n; ++i) {
    auto start = Clock::now();
    fn();
    if (device.is_cuda()) torch::cuda::synchronize();
    t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return Median(t);
}

// Rank 0's figures of the 2-rank arm.
struct DataParallel {
  double step_ms_off = 0, step_ms_on = 0;
  double allreduce_us = 0, length_broadcast_us = 0, command_broadcast_us = 0;
  std::string refused;  // rank streams the monitor refused, if any
};

DataParallel TwoRanks(int steps, int block, const train::Dataset& data, torch::Device device,
                      const std::string& monitor) {
  auto store_off = torchmon::Group::InProcessStore(), store_on = torchmon::Group::InProcessStore();
  torchmon::GroupOptions go;
  go.device = device.str();
  DataParallel out;
  std::vector<std::thread> ranks;
  const std::string run_id = "bench-dp2-" + std::to_string(::getpid());
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      torch::set_num_threads(1);
      auto off_group = torchmon::Group::Join(store_off, r, 2, go);  // both ranks join off, then on
      auto on_group = torchmon::Group::Join(store_on, r, 2, go);
      Arm off(device, "", "off", off_group);
      Arm on(device, monitor, run_id, on_group);
      train::ShardSampler s_off(data.size(), 8, 7, r, 2), s_on(data.size(), 8, 7, r, 2);
      for (int i = 0; i < 20; ++i) {  // warm-up, not measured
        Step(off, data, s_off, device);
        Step(on, data, s_on, device);
      }
      off.seconds.clear();
      on.seconds.clear();
      for (int done = 0; done < steps; done += block) {
        for (int i = 0; i < block; ++i) Step(off, data, s_off, device);
        for (int i = 0; i < block; ++i) Step(on, data, s_on, device);
      }
      // The Session's own collectives, alone, on the telemetry-off job's group.
      int64_t numel = 0;
      for (const auto& p : off.model->parameters()) numel += p.numel();
      at::Tensor flat = torch::zeros({numel + 3 * 2 + 2}, torch::TensorOptions().device(device));
      const std::string command(96, 'c');  // a serialized command is ~50-150 bytes
      double reduce = TimeIt(200, [&] { off_group->AllReduceSum(flat); }, device);
      double length = TimeIt(200, [&] { std::string none; off_group->Broadcast(&none, 0); }, device);
      double payload = TimeIt(200, [&] { std::string c = r == 0 ? command : ""; off_group->Broadcast(&c, 0); }, device);
      if (r == 0) {
        out.step_ms_off = Median(off.seconds) * 1e3;
        out.step_ms_on = Median(on.seconds) * 1e3;
        out.allreduce_us = reduce * 1e6;
        out.length_broadcast_us = length * 1e6;
        out.command_broadcast_us = payload * 1e6;
      }
      on.session->Finish(std::chrono::seconds(10));
      if (!on.session->refused().empty()) out.refused += "rank " + std::to_string(r) + ": " + on.session->refused() + "; ";
    });
  }
  for (auto& t : ranks) t.join();
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 600, block = 20, threads = 1, dp_steps = 300;
  std::string device_name = "auto", monitor_address;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--steps") steps = std::stoi(argv[i + 1]);
    else if (a == "--block") block = std::stoi(argv[i + 1]);
    else if (a == "--dp-steps") dp_steps = std::stoi(argv[i + 1]);
    else if (a == "--device") device_name = argv[i + 1];
    else if (a == "--threads") threads = std::stoi(argv[i + 1]);
    else if (a == "--monitor") monitor_address = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: trainer_overhead [--steps N] [--block N] [--dp-steps N] [--device cpu|cuda|auto] "
                           "[--threads N] [--monitor HOST:PORT]\n");
      return 2;
    }
  }
  torch::set_num_threads(threads);
  bool cuda = device_name == "cuda" || (device_name == "auto" && torch::cuda::is_available());
  torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);

  // A running gradwatchd when given, else one in-process.
  std::unique_ptr<torchmon::testing::TestMonitor> in_process;
  if (monitor_address.empty()) {
    in_process = std::make_unique<torchmon::testing::TestMonitor>("trainer-overhead");
    monitor_address = in_process->address();
  }

  auto [train_set, val] = train::make_synthetic(train::SyntheticOptions{});
  train_set = train::augment_x6(train_set);
  train_set.images = train_set.images.to(device);
  train_set.masks = train_set.masks.to(device);
  torch::manual_seed(7);
  Arm off(device, "", "off");
  torch::manual_seed(7);
  Arm on(device, monitor_address, "bench-on-" + std::to_string(::getpid()));
  train::BatchSampler s_off(train_set.size(), 4, 7), s_on(train_set.size(), 4, 7);

  for (int i = 0; i < 20; ++i) {  // warm-up, not measured
    Step(off, train_set, s_off, device);
    Step(on, train_set, s_on, device);
  }
  off.seconds.clear();
  on.seconds.clear();
  for (int done = 0; done < steps; done += block) {
    for (int i = 0; i < block; ++i) Step(off, train_set, s_off, device);
    for (int i = 0; i < block; ++i) Step(on, train_set, s_on, device);
  }
  on.session->Finish(std::chrono::seconds(10));

  std::vector<torch::Tensor> params = on.model->parameters();
  double fused = TimeIt(200, [&] { torchmon::ComputeGradStats(params); }, device);
  double per_item = TimeIt(200, [&] { torchmon::ComputeGradStatsPerItem(params); }, device);

  double med_off = Median(off.seconds), med_on = Median(on.seconds);
  std::printf(
      "{\"bench\": \"trainer_overhead\", \"device\": \"%s\", \"threads\": %d, \"steps_per_arm\": %zu, "
      "\"tensors\": %zu, \"step_ms_off\": %.4f, \"step_ms_on\": %.4f, \"overhead_ratio\": %.4f, "
      "\"norm_fused_us\": %.2f, \"norm_per_item_us\": %.2f, \"norm_speedup\": %.2f",
      device.str().c_str(), threads, on.seconds.size(), params.size(), med_off * 1e3, med_on * 1e3,
      med_on / med_off, fused * 1e6, per_item * 1e6, per_item / fused);
  // CPU only: two ranks on one GPU would share it, which NCCL refuses.
  if (dp_steps > 0 && torchmon::Group::Available() && !device.is_cuda()) {
    DataParallel dp = TwoRanks(dp_steps, block, train_set, device, monitor_address);
    std::printf(
        ", \"dp2_steps_per_arm\": %d, \"dp2_step_ms_off\": %.4f, \"dp2_step_ms_on\": %.4f, "
        "\"dp2_overhead_ratio\": %.4f, \"dp2_allreduce_us\": %.1f, \"dp2_length_broadcast_us\": %.1f, "
        "\"dp2_command_broadcast_us\": %.1f, \"dp2_refused\": \"%s\"",
        dp_steps, dp.step_ms_off, dp.step_ms_on, dp.step_ms_on / dp.step_ms_off, dp.allreduce_us,
        dp.length_broadcast_us, dp.command_broadcast_us, dp.refused.c_str());
  }
  std::printf("}\n");
  return 0;
}
