#include "rank_load.h"

#include <pthread.h>

#include <algorithm>
#include <random>

namespace gradwatch::bench {
namespace {

constexpr double kComputeSeconds = 0.009;  // forward + backward of a step, before the noise
constexpr double kLocalNormRatio = 1.25;   // a rank's own gradient is noisier than the average

// The loss's level at `step` relative to the start: 1, falling by half towards 0.5.
double LossLevel(uint64_t step) { return 0.5 + 0.5 * 1500.0 / (1500.0 + static_cast<double>(step)); }

}  // namespace

void NameThread(const std::string& name) { pthread_setname_np(pthread_self(), name.substr(0, 15).c_str()); }

v1::Hello RankHello(const std::string& run_id, int layers, uint32_t rank, uint32_t world, v1::Mode mode) {
  v1::Hello h = MakeHello(run_id, layers, mode);
  h.set_trainer_version("fanin_bench");
  h.set_host("rank" + std::to_string(rank));
  h.set_trainer_instance(4099 * std::hash<std::string>{}(run_id) + rank + 1);
  h.set_rank(rank);
  h.set_world_size(world);
  return h;
}

JobSteps::JobSteps(int layers, int ranks, uint32_t seed)
    : source_(layers, 0.5), ranks_(ranks), noise_(static_cast<size_t>(kRows) * ranks) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> loss(1.0, 0.03), norm(1.0, 0.05), compute(1.0, 0.03);
  for (RankNoise& n : noise_) n = {loss(rng), norm(rng), compute(rng)};
}

void JobSteps::Fill(uint64_t step, std::vector<v1::StepReport>& out) {
  const v1::StepReport& base = source_.Next(step);
  const double loss = base.loss() * LossLevel(step);
  out.assign(ranks_, base);
  if (ranks_ < 2) {
    out[0].set_loss(loss);
    return;
  }
  const RankNoise* row = &noise_[(step % kRows) * ranks_];
  v1::StepReport& leader = out[0];
  for (int k = 0; k < ranks_; ++k) {
    v1::StepReport& r = out[k];
    r.set_loss(loss * row[k].loss);
    r.set_local_grad_norm(base.grad_norm() * kLocalNormRatio * row[k].norm);
    r.mutable_system()->set_compute_seconds(kComputeSeconds * row[k].compute);
    leader.add_rank_losses(r.loss());
    leader.add_rank_grad_norms(r.local_grad_norm());
    leader.add_rank_compute_seconds(r.system().compute_seconds());
  }
}

Driver::Driver(std::vector<Job*> jobs, double steps_per_s, int layers, uint32_t seed, LatencyHistogram& lateness,
               const std::string& thread_name)
    : jobs_(std::move(jobs)),
      period_(std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(1.0 / steps_per_s))),
      steps_(layers, jobs_.empty() ? 1 : static_cast<int>(jobs_.front()->ranks.size()), seed),
      lateness_(lateness) {
  thread_ = std::thread([this, thread_name] { Loop(thread_name); });
}

Driver::~Driver() { Stop(); }

void Driver::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void Driver::Loop(const std::string& thread_name) {
  NameThread(thread_name);
  while (!stop_) {
    const auto now = SteadyClock::now();
    auto wake = now + std::chrono::milliseconds(10);
    for (Job* job : jobs_) {
      while (job->next_due <= now && !stop_) {
        ReportStep(*job, job->next_due);
        job->next_due += period_;
      }
      wake = std::min(wake, job->next_due);
    }
    std::this_thread::sleep_until(wake);
  }
}

void Driver::ReportStep(Job& job, SteadyClock::time_point due) {
  steps_.Fill(++job.step, reports_);
  for (size_t k = 0; k < job.ranks.size(); ++k) job.ranks[k]->Send(std::move(reports_[k]));
  lateness_.Record(SteadyClock::now() - due);
}

}  // namespace gradwatch::bench
