// The hub's map of runs and their lifecycle: hellos, stream ends, acknowledgements,
// reads, watchers and housekeeping. Reports are in hub_steps.cc, commands and policy in
// hub_commands.cc, detector rebuilds in hub_rebuild.cc, the checks on a hello in hello_check.cc.
#include "gradwatch/monitor/hub.h"

#include <algorithm>

#include "convert.h"
#include "explain.h"
#include "hello_check.h"
#include "gradwatch/metrics/exporter.h"
#include "gradwatch/store/store.h"
#include "hub_internal.h"
#include "run_state.h"

namespace gradwatch::monitor {

// A run as the store holds it, with its step count and last step from the steps table
// (the header may lag behind them after a crash).
std::unique_ptr<RunState> Hub::Stored(v1::Run run) const {
  auto state = std::make_unique<RunState>();
  state->run = std::move(run);
  auto [count, last] = store_.StepCount(state->run.run_id());
  state->run.set_steps(count);
  state->run.set_last_step(last);
  state->max_step_seen = state->stored_through = last;
  LoadRanks(*state);
  return state;
}

Hub::Hub(HubOptions options, store::Store& store, metrics::Exporter& exporter, const Clock& clock)
    : options_(options), store_(store), exporter_(exporter), clock_(clock) {
  // Runs that were live before a restart: known, disconnected; their streams resume with
  // a hello. Ended runs stay in the store until someone asks for them.
  for (auto& run : store_.ListRuns()) {
    if (Ended(run.state())) continue;
    std::shared_ptr<RunState> state = Stored(std::move(run));
    state->run.set_state(v1::RUN_STATE_DISCONNECTED);
    state->disconnected_millis = clock_.NowMillis();
    ++live_;
    runs_[state->run.run_id()] = std::move(state);
  }
  rebuilder_ = std::thread([this] { RebuildLoop(); });
}

Hub::~Hub() {
  {
    std::lock_guard<std::mutex> lock(rebuild_mu_);
    stopping_ = true;
  }
  rebuild_cv_.notify_all();
  rebuilder_.join();
}

std::shared_ptr<RunState> Hub::Find(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = runs_.find(run_id);
  return it == runs_.end() ? nullptr : it->second;
}

std::shared_ptr<RunState> Hub::FindOrLoad(const std::string& run_id) {
  if (auto run = Find(run_id)) return run;
  std::optional<v1::Run> stored = store_.GetRun(run_id);  // no lock held while reading
  if (!stored) return nullptr;
  std::shared_ptr<RunState> state = Stored(std::move(*stored));
  state->ended_millis = clock_.NowMillis();  // back in memory for one retention period
  state->metrics_removed = true;             // it has no series until a stream resumes it
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = runs_.emplace(run_id, std::move(state));
  return it->second;  // another caller's copy if it loaded first
}

std::vector<std::shared_ptr<RunState>> Hub::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<RunState>> out;
  out.reserve(runs_.size());
  for (const auto& [id, run] : runs_) out.push_back(run);
  return out;
}

// Whether `hello` may take over `run`, which already exists. See Hello.trainer_instance.
Status Hub::CheckTakeover(const RunState& run, const v1::Hello& hello) const {
  const std::string& id = hello.run_id();
  if (run.run.layer_names_size() > 0 && run.run.layer_names_size() != hello.layer_names_size()) {
    return Status::Invalid("run " + id + " was started with " + std::to_string(run.run.layer_names_size()) +
                           " layers, this hello declares " + std::to_string(hello.layer_names_size()));
  }
  const uint32_t world = std::max(1u, hello.world_size()), known = std::max(1u, run.run.world_size());
  if (world != known && (run.max_step_seen > 0 || AnyStreamOpen(run))) {
    return Status::Invalid("run " + id + " is a job of " + std::to_string(known) + " rank(s), this hello declares " +
                           "world_size " + std::to_string(world));
  }
  if (hello.rank() != 0) return CheckRankTakeover(run, hello);
  const uint64_t last = run.max_step_seen;
  if (last == 0) return {};  // nothing reported yet: anyone may (re)start it
  if (hello.trainer_instance() != 0 && hello.trainer_instance() == run.run.trainer_instance()) return {};
  if (hello.resume_after_step() == last) return {};  // an explicit resume
  return Status::Precondition(
      "run " + id + " already holds steps up to " + std::to_string(last) + " (" + StateName(run.run.state()) +
      ") from another trainer; use a new run id, or resume it with resume_after_step " + std::to_string(last) +
      (hello.resume_after_step() != 0 ? " (this hello says " + std::to_string(hello.resume_after_step()) + ")" : ""));
}

Status Hub::OnHello(const v1::Hello& hello, std::shared_ptr<StreamSink> sink) {
  if (Status bad = CheckHello(hello, options_); !bad.ok()) return bad;
  auto full = [&] {
    return Status::Exhausted("the monitor guards " + std::to_string(live_.load()) +
                             " live runs, its limit (gradwatchd --max-runs); ended runs do not count");
  };
  std::lock_guard<std::mutex> hellos(hello_mu_);  // only hellos make runs live: the check holds
  std::shared_ptr<RunState> run = FindOrLoad(hello.run_id());
  const bool created = !run;
  if (created) {
    if (live_.load() >= options_.max_runs) return full();
    run = std::make_shared<RunState>();
    run->run.set_run_id(hello.run_id());
    run->run.set_started_unix_millis(clock_.NowMillis());
    std::lock_guard<std::mutex> map(mu_);  // in the map before its lock is taken: see mu_
    runs_[hello.run_id()] = run;
  }
  std::lock_guard<std::mutex> lock(run->mu);
  if (!created) {
    if (Status refused = CheckTakeover(*run, hello); !refused.ok()) return refused;
    if (Ended(run->run.state()) && live_.load() >= options_.max_runs) return full();
  }
  const bool history = !run->detector && run->max_step_seen > 0;  // back after a restart or eviction
  // Another rank of a run already bound leaves the run's view (config, mode) alone: a rank
  // that reconnects must not undo a mode or policy set since.
  if (hello.rank() == 0 || !run->detector) Bind(*run, hello);
  if (history) QueueRebuild(run, nullptr);  // warm the detectors on what is stored, off this thread
  const uint32_t rank = hello.rank();
  StreamSink& out = *sink;
  uint64_t stored = run->stored_through, evals_stored = run->evals_stored_through;
  if (rank == 0) {
    run->sink = std::move(sink);
  } else {
    RankStream& stream = run->ranks[rank];
    stream.sink = std::move(sink);
    stored = stream.stored_through;
    evals_stored = 0;
  }
  MarkRank(*run, rank, &hello, true, false);
  SetState(*run, v1::RUN_STATE_RUNNING);
  exporter_.SetMode(run->run.run_id(), ModeName(run->run.mode()));
  Persist(*run);
  out.Send(AckMessage(stored, evals_stored));
  return {};
}

// The hello's view of the run wins, except for overrides an operator set on it
// (UpdatePolicy), which a resuming trainer's hello does not undo. Of a data-parallel job,
// the run's host, device and trainer instance are rank 0's.
void Hub::Bind(RunState& run, const v1::Hello& hello) {
  auto thresholds = run.run.config().thresholds();
  auto policy = run.run.config().policy();
  run.run.mutable_config()->CopyFrom(hello.config());
  for (const auto& [k, v] : thresholds) (*run.run.mutable_config()->mutable_thresholds())[k] = v;
  for (const auto& [k, v] : policy) (*run.run.mutable_config()->mutable_policy())[k] = v;
  run.run.mutable_layer_names()->CopyFrom(hello.layer_names());
  run.run.set_mode(hello.mode() == v1::MODE_UNSPECIFIED ? v1::MODE_GUARD : hello.mode());
  if (hello.rank() == 0) {
    run.run.set_device(hello.device());
    run.run.set_host(hello.host());
    run.run.set_trainer_instance(hello.trainer_instance());
  }
  run.run.set_world_size(hello.world_size() >= 2 ? hello.world_size() : 0);
  for (int rank = run.run.ranks_size(); rank < static_cast<int>(run.run.world_size()); ++rank) {
    run.run.add_ranks()->set_rank(static_cast<uint32_t>(rank));
  }
  if (!run.detector) StartDetectors(run);
  exporter_.AddRun(hello.run_id(), std::vector<std::string>(hello.layer_names().begin(), hello.layer_names().end()));
  run.metrics_removed = false;
}

void Hub::OnStreamClosed(const std::string& run_id, const StreamSink* sink, bool clean, uint32_t rank, bool stopped) {
  std::shared_ptr<RunState> run = Find(run_id);
  if (!run) return;
  std::lock_guard<std::mutex> lock(run->mu);
  if (rank != 0) {
    auto it = run->ranks.find(rank);
    if (it == run->ranks.end() || it->second.sink.get() != sink) return;  // a newer stream took over
    it->second.sink.reset();
    return CloseRank(*run, rank, clean);
  }
  if (run->sink.get() != sink) return;  // a newer stream took over
  run->sink.reset();
  MarkRank(*run, 0, nullptr, false, clean);
  // A run that never reported a step has nothing to resume: it ends now rather than
  // holding a live slot until the stall timeout. A hello may start it again.
  const bool empty = run->max_step_seen == 0;
  // Rank 0 broke while other ranks still report: the job runs on (unguarded until rank 0
  // is back), and the job watch says a rank was lost.
  if (!clean && AnyStreamOpen(*run)) {
    for (auto& p : run->ledger.TakeAll()) {
      if (p.done) p.done(p.record, false);
    }
    Persist(*run);
    return;
  }
  if (run->run.state() == v1::RUN_STATE_RUNNING) {
    SetState(*run, clean     ? (stopped ? v1::RUN_STATE_STOPPED : v1::RUN_STATE_FINISHED)
                   : empty ? v1::RUN_STATE_FAILED
                           : v1::RUN_STATE_DISCONNECTED);
  }
  if (!clean) run->disconnected_millis = clock_.NowMillis();
  for (auto& p : run->ledger.TakeAll()) {
    if (p.done) p.done(p.record, false);
  }
  Persist(*run);
}

// The acks are written after the run's lock is released: a write is a syscall on this (the
// store's) thread, and the stream's own reports wait on that lock meanwhile. Acks stay in
// order: this thread is their only sender outside the lock, and a stream's own thread reads
// stored_through under it, so it never sends one older than what was sent before.
void Hub::OnStored(const std::map<store::StreamKey, uint64_t>& stored_through) {
  exporter_.SetStoreLag(static_cast<double>(store_.Lag()));
  for (const auto& [key, step] : stored_through) {
    std::shared_ptr<RunState> run = Find(key.run_id);
    if (!run) continue;
    std::shared_ptr<StreamSink> sink;
    uint64_t steps_mark = step, evals_mark = 0;
    {
      std::lock_guard<std::mutex> lock(run->mu);
      if (key.rank != 0) {  // evals come from rank 0 only
        RankStream& stream = run->ranks[key.rank];
        if (key.evals || step <= stream.stored_through) continue;
        stream.stored_through = step;
        sink = stream.sink;
      } else {
        uint64_t& through = key.evals ? run->evals_stored_through : run->stored_through;
        if (step <= through) continue;
        through = step;
        sink = run->sink;
        steps_mark = run->stored_through;
        evals_mark = run->evals_stored_through;
      }
    }
    if (sink) sink->Send(AckMessage(steps_mark, evals_mark));
  }
}

void Hub::SetState(RunState& run, v1::RunState state) {
  const v1::RunState before = run.run.state();
  if (before == state) return;
  const bool was_live = before == v1::RUN_STATE_RUNNING || before == v1::RUN_STATE_DISCONNECTED;
  const bool is_live = state == v1::RUN_STATE_RUNNING || state == v1::RUN_STATE_DISCONNECTED;
  if (is_live != was_live) is_live ? ++live_ : --live_;
  run.run.set_state(state);
  run.dirty = true;
  run.ended_millis = Ended(state) ? clock_.NowMillis() : 0;
  exporter_.SetRunState(run.run.run_id(), StateName(state));
  v1::RunUpdate update;
  *update.mutable_run() = run.run;
  Publish(run, update);
  if (Ended(state)) {
    for (Watcher* w : run.watchers) w->End();
    run.watchers.clear();
  }
}

void Hub::Persist(RunState& run) {
  store_.PutRun(run.run);
  run.dirty = false;
}

void Hub::Publish(RunState& run, const v1::RunUpdate& update) {
  for (Watcher* w : run.watchers) w->Push(update);
}

std::vector<v1::Run> Hub::ListRuns() const {
  std::vector<v1::Run> stored = store_.ListRuns();  // ended runs, read without any lock
  std::map<std::string, v1::Run> by_id;
  for (auto& run : stored) by_id[run.run_id()] = std::move(run);
  for (const auto& run : Snapshot()) {  // memory is newer than the store
    std::lock_guard<std::mutex> lock(run->mu);
    by_id[run->run.run_id()] = run->run;
  }
  std::vector<v1::Run> out;
  out.reserve(by_id.size());
  for (auto& [id, run] : by_id) out.push_back(std::move(run));
  return out;
}

std::optional<v1::Run> Hub::GetRun(const std::string& run_id) const {
  if (std::shared_ptr<RunState> run = Find(run_id)) {
    std::lock_guard<std::mutex> lock(run->mu);
    return run->run;
  }
  return store_.GetRun(run_id);  // an ended run, out of memory
}

bool Hub::Watch(const std::string& run_id, Watcher* watcher) {
  std::shared_ptr<RunState> run = FindOrLoad(run_id);
  if (!run) return false;
  std::lock_guard<std::mutex> lock(run->mu);
  v1::RunUpdate snapshot;
  *snapshot.mutable_run() = run->run;
  watcher->Push(snapshot);
  if (Ended(run->run.state())) {
    watcher->End();
    return true;
  }
  run->watchers.insert(watcher);
  return true;
}

void Hub::Unwatch(const std::string& run_id, Watcher* watcher) {
  if (std::shared_ptr<RunState> run = Find(run_id)) {
    std::lock_guard<std::mutex> lock(run->mu);
    run->watchers.erase(watcher);
  }
}

void Hub::Tick() {
  const int64_t now = clock_.NowMillis();
  exporter_.SetStoreLag(static_cast<double>(store_.Lag()));
  std::vector<std::string> evict;
  for (const auto& run : Snapshot()) {
    std::lock_guard<std::mutex> lock(run->mu);
    Housekeep(*run, now);
    if (Evictable(*run, now)) evict.push_back(run->run.run_id());
  }
  if (evict.empty()) return;
  std::vector<std::shared_ptr<RunState>> gone;  // freed here, after their locks are released
  std::lock_guard<std::mutex> map(mu_);
  for (const auto& id : evict) {
    auto it = runs_.find(id);
    if (it == runs_.end()) continue;
    std::shared_ptr<RunState> run = it->second;
    std::lock_guard<std::mutex> lock(run->mu);  // still evictable now?
    if (Evictable(*run, now)) {
      runs_.erase(it);
      gone.push_back(std::move(run));
    }
  }
}

void Hub::Housekeep(RunState& run, int64_t now) {
  const std::string& id = run.run.run_id();
  for (auto& p : run.ledger.Expire(now)) {
    if (p.done) p.done(p.record, false);
    exporter_.CountCommand(id, ActionName(p.record.command()), "timeout");
  }
  if (run.data_parallel()) WatchJob(run, now);
  if (run.run.state() == v1::RUN_STATE_DISCONNECTED && now - run.disconnected_millis >= options_.stall_timeout_ms) {
    SetState(run, v1::RUN_STATE_FAILED);
  }
  if (Ended(run.run.state()) && !run.metrics_removed && now - run.ended_millis >= options_.retention_ms) {
    exporter_.RemoveRun(id);
    run.metrics_removed = true;
  }
  if (run.dirty) Persist(run);
}

// An ended run leaves memory with its series; the store keeps it for every read.
bool Hub::Evictable(const RunState& run, int64_t now) const {
  return Ended(run.run.state()) && run.metrics_removed && !AnyStreamOpen(run) && run.watchers.empty() && run.ledger.empty() &&
         !run.rebuilding && !run.dirty && now - run.ended_millis >= options_.retention_ms;
}

std::string Hub::Explain(const std::string& run_id) const {
  std::optional<v1::Run> run = GetRun(run_id);
  if (!run) return "";
  std::vector<v1::StepReport> steps;
  for (uint64_t after = 0; steps.size() < kExplainMaxSteps;) {  // the record, a page at a time
    auto page = store_.ListSteps(run_id, after, kStepPage);
    if (page.empty()) break;
    after = page.back().step();
    steps.insert(steps.end(), std::make_move_iterator(page.begin()), std::make_move_iterator(page.end()));
  }
  return ExplainRun(*run, store_.ListEvents(run_id), store_.ListCommands(run_id), steps);
}

}  // namespace gradwatch::monitor
