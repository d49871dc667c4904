// The hub's data-parallel side: the streams of ranks 1.. of a run (stored and exported
// per rank, no detectors of their own), every rank's status in Run.ranks, heartbeats, and
// the job watch (hang, lag, lost ranks) driven by the timer.
#include <algorithm>

#include "convert.h"
#include "gradwatch/metrics/exporter.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "hub_internal.h"
#include "run_state.h"

namespace gradwatch::monitor {

// Rank `hello.rank() >= 1` of a run that exists: like CheckTakeover, for that rank's own
// steps and trainer instance.
Status Hub::CheckRankTakeover(const RunState& run, const v1::Hello& hello) const {
  const uint32_t rank = hello.rank();
  auto it = run.ranks.find(rank);
  const uint64_t last = it == run.ranks.end() ? 0 : it->second.max_step_seen;
  if (last == 0) return {};
  const uint64_t known = rank < static_cast<uint32_t>(run.run.ranks_size()) ? run.run.ranks(rank).trainer_instance() : 0;
  if (hello.trainer_instance() != 0 && hello.trainer_instance() == known) return {};
  if (hello.resume_after_step() == last) return {};
  return Status::Precondition("rank " + std::to_string(rank) + " of run " + hello.run_id() +
                              " already holds steps up to " + std::to_string(last) +
                              " from another trainer; use a new run id, or resume it with resume_after_step " +
                              std::to_string(last));
}

// A report of rank >= 1: validated and deduplicated like rank 0's, then stored, exported
// and noted in the rank's status. It feeds no detector: rank 0's reports carry every
// rank's values for those.
void Hub::OnRankStep(RunState& run, uint32_t rank, std::shared_ptr<const v1::StepReport> report, StreamSink& sink) {
  const v1::StepReport& step = *report;
  const char* reason = "";
  if (std::string why = StepRefusal(step, run.run.layer_names_size(), run.run.world_size(), &reason); !why.empty()) {
    exporter_.MessageRejected(reason);
    sink.Send(Rejection(step.step(), why));
    return;
  }
  RankStream& stream = run.ranks[rank];
  if (step.step() <= stream.max_step_seen) {
    exporter_.MessageReceived("duplicate_step");
    if (step.step() <= stream.stored_through) sink.Send(AckMessage(stream.stored_through, 0));
    return;
  }
  stream.max_step_seen = step.step();
  store_.PutStep(run.run.run_id(), report, rank);
  NoteRankStep(run, rank, step);
}

// The rank's status and series after a new step of it.
void Hub::NoteRankStep(RunState& run, uint32_t rank, const v1::StepReport& step) {
  const int64_t now = clock_.NowMillis();
  run.ranks[rank].last_step_millis = now;
  if (rank < static_cast<uint32_t>(run.run.ranks_size())) {
    v1::RankStatus* status = run.run.mutable_ranks(static_cast<int>(rank));
    status->set_last_step(step.step());
    status->set_last_unix_millis(now);
  }
  metrics::RankValues v;
  v.step = step.step();
  v.loss = step.loss();
  v.local_grad_norm = step.has_local_grad_norm() ? step.local_grad_norm() : detect::kNaN;
  v.compute_seconds = step.system().has_compute_seconds() ? step.system().compute_seconds() : detect::kNaN;
  exporter_.ObserveRank(run.run.run_id(), rank, v);
}

// Sets a rank's stream status; `hello` (when given) also its host, device and instance.
void Hub::MarkRank(RunState& run, uint32_t rank, const v1::Hello* hello, bool connected, bool finished) {
  if (!run.data_parallel() || rank >= static_cast<uint32_t>(run.run.ranks_size())) return;
  v1::RankStatus* status = run.run.mutable_ranks(static_cast<int>(rank));
  status->set_connected(connected);
  status->set_finished(finished);
  if (hello) {
    status->set_host(hello->host());
    status->set_device(hello->device());
    status->set_trainer_instance(hello->trainer_instance());
    status->clear_heartbeat();
  }
  run.dirty = true;
  exporter_.SetRankConnected(run.run.run_id(), rank, connected);
}

// The stream of rank >= 1 ended. The run's state follows its streams: it stays running
// while any is open; with none left and rank 0 gone without a goodbye it is disconnected.
void Hub::CloseRank(RunState& run, uint32_t rank, bool clean) {
  MarkRank(run, rank, nullptr, false, clean);
  if (run.run.state() == v1::RUN_STATE_RUNNING && !AnyStreamOpen(run)) {
    SetState(run, v1::RUN_STATE_DISCONNECTED);
    run.disconnected_millis = clock_.NowMillis();
  }
  Persist(run);
}

bool Hub::AnyStreamOpen(const RunState& run) const {
  if (run.sink) return true;
  return std::any_of(run.ranks.begin(), run.ranks.end(), [](const auto& r) { return r.second.sink != nullptr; });
}

void Hub::OnHeartbeat(const std::string& run_id, const v1::Heartbeat& heartbeat, uint32_t rank) {
  std::shared_ptr<RunState> run = Find(run_id);
  if (!run) return;
  std::lock_guard<std::mutex> lock(run->mu);
  run->ranks[rank].last_heartbeat_millis = clock_.NowMillis();
  if (rank < static_cast<uint32_t>(run->run.ranks_size())) {
    *run->run.mutable_ranks(static_cast<int>(rank))->mutable_heartbeat() = heartbeat;
    run->dirty = true;
  }
}

// The timer's look at a running data-parallel job as a whole.
void Hub::WatchJob(RunState& run, int64_t now) {
  if (run.run.state() != v1::RUN_STATE_RUNNING) return;
  if (!run.job_watch) run.job_watch = std::make_unique<detect::JobWatch>(ThresholdsOf(run.run.config()));
  std::vector<detect::RankView> views;
  views.reserve(run.run.ranks_size());
  for (const v1::RankStatus& status : run.run.ranks()) {
    detect::RankView v;
    v.rank = status.rank();
    v.connected = status.connected();
    v.finished = status.finished();
    v.last_step = status.last_step();
    const RankStream& stream = run.ranks[status.rank()];
    v.last_step_millis = stream.last_step_millis;
    v.phase = static_cast<int>(status.heartbeat().phase());
    v.phase_since_millis = status.heartbeat().phase_unix_millis();
    v.last_heartbeat_millis = stream.last_heartbeat_millis;
    views.push_back(v);
  }
  for (detect::Event& e : run.job_watch->Check(views, now)) RecordEvent(run, e);
}

// After a restart: the highest stored step of each rank >= 1, and no stream open.
void Hub::LoadRanks(RunState& run) const {
  if (!run.data_parallel()) return;
  for (auto& status : *run.run.mutable_ranks()) status.set_connected(false);
  for (const auto& [rank, high] : store_.RankHighs(run.run.run_id())) {
    RankStream& stream = run.ranks[rank];
    stream.max_step_seen = stream.stored_through = high;
    if (rank < static_cast<uint32_t>(run.run.ranks_size())) run.run.mutable_ranks(static_cast<int>(rank))->set_last_step(high);
  }
}

}  // namespace gradwatch::monitor
