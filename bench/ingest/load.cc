#include "load.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

namespace gradwatch::bench {
namespace {

constexpr int kPoolSize = 256;

using SteadyClock = std::chrono::steady_clock;

int64_t UnixMillis() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

v1::Hello MakeHello(const std::string& run_id, int layers, v1::Mode mode) {
  v1::Hello h;
  h.set_run_id(run_id);
  for (int i = 0; i < layers; ++i) {
    h.add_layer_names("block" + std::to_string(i / 2) + (i % 2 ? ".conv.bias" : ".conv.weight"));
  }
  h.set_mode(mode);
  h.set_trainer_version("ingest_bench");
  h.set_device("cpu");
  v1::RunConfig* c = h.mutable_config();
  c->set_model("unet(bench)");
  c->set_optimizer("sgd(momentum=0.9,nesterov)");
  c->set_learning_rate(0.01);
  c->set_batch_size(4);
  c->set_loss("jaccard");
  c->set_loss_upper_bound(1.0);
  return h;
}

// Noise of a few percent around healthy values, so that no detector fires.
StepSource::StepSource(int layers, double loss) {
  std::mt19937 rng(42);
  std::normal_distribution<double> noise(0.0, 0.03);
  for (int k = 0; k < kPoolSize; ++k) {
    v1::StepReport s;
    s.set_epoch(1);
    s.set_loss(loss * (1 + noise(rng)));
    s.set_learning_rate(0.01);
    double sum_squares = 0;
    for (int i = 0; i < layers; ++i) {
      float norm = static_cast<float>(0.2 / std::sqrt(layers) * (1 + 10 * noise(rng)));
      s.add_layer_grad_norms(std::abs(norm));
      sum_squares += double{norm} * norm;
    }
    s.set_grad_norm(std::sqrt(sum_squares));
    s.set_jaccard_soft(0.70 * (1 + noise(rng)));
    s.set_jaccard_hard(0.68 * (1 + noise(rng)));
    s.set_accuracy(0.95);
    s.set_step_seconds(0.012);
    pool_.push_back(std::move(s));
  }
}

const v1::StepReport& StepSource::Next(uint64_t step, bool awaiting_verdict) {
  v1::StepReport& s = pool_[step % pool_.size()];
  s.set_step(step);
  s.set_unix_millis(UnixMillis());
  s.set_awaiting_verdict(awaiting_verdict);
  return s;
}

Fleet::Fleet(const FleetOptions& o) : source_(o.layers), last_step_(o.runs, 0) {
  for (int i = 0; i < o.runs; ++i) {
    reporter::ReporterOptions ro;
    ro.address = o.address;
    ro.max_buffered = o.max_buffered;
    ro.send_interval = o.send_interval;
    ro.log_warnings = false;
    auto hello = MakeHello(o.run_prefix + "-" + std::to_string(i), o.layers, o.mode);
    reporters_.push_back(std::make_unique<reporter::Reporter>(ro, std::move(hello)));
  }
}

Fleet::~Fleet() {
  for (auto& r : reporters_) r->Close(std::chrono::seconds(5));
}

bool Fleet::WaitConnected(std::chrono::milliseconds deadline) {
  auto until = SteadyClock::now() + deadline;
  for (auto& r : reporters_) {
    while (!r->stats().connected) {
      if (SteadyClock::now() > until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return true;
}

void Fleet::ReportBurst(uint64_t per_run) {
  for (uint64_t k = 0; k < per_run; ++k) {
    for (size_t i = 0; i < reporters_.size(); ++i) ReportOne(i);
  }
}

void Fleet::ReportOne(size_t i) {
  i %= reporters_.size();
  reporters_[i]->Report(source_.Next(++last_step_[i]));
}

bool Fleet::Flush(std::chrono::milliseconds deadline) {
  auto until = SteadyClock::now() + deadline;
  for (auto& r : reporters_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - SteadyClock::now());
    if (!r->Flush(std::max(left, std::chrono::milliseconds(0)))) return false;
  }
  return true;
}

uint64_t Fleet::reported() const {
  uint64_t n = 0;
  for (auto& r : reporters_) n += r->stats().reported;
  return n;
}

uint64_t Fleet::dropped() const {
  uint64_t n = 0;
  for (auto& r : reporters_) n += r->stats().dropped;
  return n;
}

}  // namespace gradwatch::bench
