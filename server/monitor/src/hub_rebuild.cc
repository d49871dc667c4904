// Detectors built from a run's stored history without holding the hub's or the run's
// lock: after a restart (the first hello) and on a policy change. The run keeps taking
// reports meanwhile (with fresh detectors after a restart, its old ones on a policy
// change); the reports it takes while the history is read are replayed into the new
// detectors when they are swapped in.
#include "convert.h"
#include "gradwatch/detect/run_detector.h"
#include "gradwatch/detect/thresholds.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "hub_internal.h"
#include "run_state.h"

namespace gradwatch::monitor {
namespace {

struct Detectors {
  std::unique_ptr<detect::RunDetector> detector;
  detect::IncidentTracker incidents;
};

// Fresh detectors for the run's layers and config (its overrides were validated before).
Detectors MakeDetectors(const v1::Run& run) {
  detect::RunInfo info;
  info.layer_names.assign(run.layer_names().begin(), run.layer_names().end());
  info.loss_upper_bound = run.config().loss_upper_bound();
  const detect::Thresholds thresholds = ThresholdsOf(run.config());
  return {std::make_unique<detect::RunDetector>(info, thresholds),
          detect::IncidentTracker(static_cast<uint64_t>(thresholds.incident_gap))};
}

}  // namespace

void Hub::StartDetectors(RunState& run) {
  Detectors d = MakeDetectors(run.run);
  run.detector = std::move(d.detector);
  run.incidents = std::move(d.incidents);
  MakePolicy(run);
}

void Hub::QueueRebuild(std::shared_ptr<RunState> run, PolicyDone done) {
  {
    std::lock_guard<std::mutex> lock(rebuild_mu_);
    if (!stopping_) {
      rebuilds_.push_back({std::move(run), std::move(done)});
      ++rebuilds_started_;
      rebuild_cv_.notify_all();
      return;
    }
  }
  if (done) done(Status::Precondition("the monitor is shutting down"), v1::Run());
}

void Hub::AwaitRebuilds() {
  std::unique_lock<std::mutex> lock(rebuild_mu_);
  const size_t target = rebuilds_started_;
  rebuild_cv_.wait(lock, [&] { return rebuilds_done_ >= target || stopping_; });
}

void Hub::RebuildLoop() {
  std::unique_lock<std::mutex> lock(rebuild_mu_);
  for (;;) {
    rebuild_cv_.wait(lock, [&] { return stopping_ || !rebuilds_.empty(); });
    if (stopping_) break;
    Rebuild job = std::move(rebuilds_.front());
    rebuilds_.pop_front();
    lock.unlock();
    RebuildDetectors(job);
    lock.lock();
    ++rebuilds_done_;
    rebuild_cv_.notify_all();
  }
  for (auto& job : rebuilds_) {
    if (job.done) job.done(Status::Precondition("the monitor is shutting down"), v1::Run());
  }
  rebuilds_.clear();
}

void Hub::RebuildDetectors(const Rebuild& job) {
  RunState& run = *job.run;
  v1::Run header;
  uint64_t through = 0, generation = 0, clipping_commands = 0;
  {
    std::lock_guard<std::mutex> lock(run.mu);
    header = run.run;
    through = run.max_step_seen;
    clipping_commands = run.clipping_commands;
    generation = ++run.rebuild_generation;
    run.rebuilding = true;
    run.rebuild_tail.clear();
  }
  store_.Flush();  // the steps up to `through` were queued before: now they are readable
  Detectors d = MakeDetectors(header);
  // Whose clipping is in force, from the last stored clipping command (after a restart the
  // run's state does not say).
  bool clipping_by_policy = false;
  for (const auto& c : store_.ListCommands(header.run_id())) {
    if (c.command().has_set_clipping()) clipping_by_policy = ClipsByPolicy(c.command());
  }
  for (uint64_t after = 0; after < through;) {
    auto page = store_.ListSteps(header.run_id(), after, kStepPage);
    if (page.empty()) break;
    for (const auto& s : page) {
      if (s.step() <= through) d.detector->OnStep(ToSample(s));
    }
    after = page.back().step();
  }
  std::lock_guard<std::mutex> lock(run.mu);
  if (run.rebuild_generation == generation) {  // else a newer rebuild (with this config too) follows
    for (const auto& s : run.rebuild_tail) {
      if (s.step() > through) d.detector->OnStep(ToSample(s));
    }
    run.detector = std::move(d.detector);
    run.incidents = std::move(d.incidents);
    if (run.clipping_commands == clipping_commands) {  // else a newer command said whose it is
      run.clipping_by_policy = clipping_by_policy;
    }
    MakePolicy(run);
    run.rebuilding = false;
    run.rebuild_tail.clear();
  }
  if (job.done) job.done(Status(), run.run);
}

}  // namespace gradwatch::monitor
