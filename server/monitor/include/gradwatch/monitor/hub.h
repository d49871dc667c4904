// The monitor's core: every run's live state, fed by telemetry streams in arrival
// order. For each report it validates, runs the run's detectors, lets the policy decide,
// updates metrics, queues the record for the store and tells watchers; commands and
// verdicts go back through the run's StreamSink. It knows nothing of gRPC's server
// machinery: streams and watchers are interfaces, time is a Clock.
//
// Locking: the hub's own lock guards only its map of runs and is held for lookups; each
// run has a lock of its own (RunState, run_state.h), so one run's reports never wait for
// another's. Slow work holds neither: rebuilding a run's detectors from its stored
// history (after a restart, or a policy change) runs on the hub's rebuild thread and the
// new detectors are swapped in; Explain and ListCommands are reads of the store.
//
// Thread-safety: every public method may be called from any thread. Sinks, watchers and
// CommandDone callbacks are called with the run's lock held and must not call back into
// the hub.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gradwatch/common/status.h"
#include "gradwatch/monitor/clock.h"
#include "gradwatch/v1/runs.pb.h"
#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::detect {
struct Event;
struct StepSample;
}
namespace gradwatch::store {
class Store;
struct StreamKey;
}
namespace gradwatch::metrics {
class Exporter;
}

namespace gradwatch::monitor {

// Where a run's outgoing messages go: its current telemetry stream. Send never blocks.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void Send(const v1::MonitorMessage& message) = 0;
};

// A live reader of one run (the Runs.WatchRun stream). Push never blocks.
class Watcher {
 public:
  virtual ~Watcher() = default;
  virtual void Push(const v1::RunUpdate& update) = 0;
  virtual void End() = 0;  // the run ended; no more pushes
};

struct HubOptions {
  // Live runs (running or disconnected) at most; a hello past it is refused with
  // RESOURCE_EXHAUSTED. Ended runs do not count: they leave memory after retention_ms
  // and stay in the store, where every read still finds them.
  size_t max_runs = 1024;
  size_t max_layers = 4096;         // layer names per run
  size_t max_name_length = 256;     // per layer name
  size_t max_text_length = 256;     // hello.host, device, trainer_version
  size_t max_config_text_length = 1024;  // the config's strings, label keys and values
  size_t max_labels = 64;
  int64_t stall_timeout_ms = 60'000;   // a disconnected run with no stream this long is failed
  int64_t retention_ms = 15 * 60'000;  // ended runs' metric series and memory are kept this long
  int64_t command_timeout_ms = 30'000; // a command with no timeout of its own waits this long
  uint32_t max_world_size = 4096;       // ranks of one data-parallel run
};

// The highest step a report may carry: steps are stored as SQLite's signed 64-bit integers.
inline constexpr uint64_t kMaxStep = 9'223'372'036'854'775'807ull;

// What the caller of SendCommand gets once the trainer acknowledged or time ran out.
using CommandDone = std::function<void(const v1::CommandRecord& record, bool acknowledged)>;
// What the caller of UpdatePolicy gets once the detectors were rebuilt: the run with its
// new config, or why the rebuild did not happen (the monitor is stopping).
using PolicyDone = std::function<void(const Status& status, const v1::Run& run)>;

struct RunState;

class Hub {
 public:
  Hub(HubOptions options, store::Store& store, metrics::Exporter& exporter, const Clock& clock);
  ~Hub();  // stops the rebuild thread; pending PolicyDone callbacks get an error
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  // A stream's first message. On success binds `sink` as the stream of the hello's rank of
  // the run and answers with an Ack of what is stored; otherwise says why the hello was
  // refused (the caller ends the stream with the status of the code): kInvalidArgument for
  // a malformed hello (or a rank or world size that does not fit the run's),
  // kFailedPrecondition for a run (rank) whose steps came from another trainer (see
  // Hello.trainer_instance), kResourceExhausted past max_runs live runs.
  //
  // Data parallel (telemetry.proto): every rank of a job is a stream of one run. Rank 0's
  // reports feed the run's detectors, and commands and verdicts go to rank 0 only; the
  // other ranks' reports are stored and exported per rank and tell the job watch (hang,
  // lag, lost ranks) where each rank is. The run is running while any rank's stream is
  // open and finishes when rank 0 says goodbye.
  Status OnHello(const v1::Hello& hello, std::shared_ptr<StreamSink> sink);
  // Reports on a stream whose hello was accepted, from `rank` of the run. A bad report is
  // refused in-band with a Rejection naming what was wrong, and the stream stays open.
  // The shared form hands the report on to the store as it is; the other copies it.
  void OnStep(const std::string& run_id, std::shared_ptr<const v1::StepReport> step, StreamSink& sink,
              uint32_t rank = 0);
  void OnStep(const std::string& run_id, const v1::StepReport& step, StreamSink& sink, uint32_t rank = 0);
  void OnEval(const std::string& run_id, const v1::EvalReport& eval, StreamSink& sink, uint32_t rank = 0);
  void OnCommandAck(const std::string& run_id, const v1::CommandAck& ack, uint32_t rank = 0);
  void OnHeartbeat(const std::string& run_id, const v1::Heartbeat& heartbeat, uint32_t rank);
  // The stream ended: `clean` when the trainer said goodbye (finished, or stopped when the
  // goodbye says `stopped`), false when it broke. A run that never reported a step ends at
  // once either way (nothing to resume).
  void OnStreamClosed(const std::string& run_id, const StreamSink* sink, bool clean, uint32_t rank = 0,
                      bool stopped = false);

  // Called by the store after a commit: acknowledges stored steps to their streams.
  void OnStored(const std::map<store::StreamKey, uint64_t>& stored_through);

  // Runs service. Ended runs out of memory are read from the store.
  std::vector<v1::Run> ListRuns() const;
  std::optional<v1::Run> GetRun(const std::string& run_id) const;
  // Sends an operator (or other) command to a live run. `done` is called exactly once:
  // on the trainer's ack, on timeout (from Tick), or at once if the run has no stream.
  // kInvalidArgument for a malformed command, kNotFound for an unknown run,
  // kFailedPrecondition for a run without a live stream.
  Status SendCommand(const std::string& run_id, v1::Command command, int64_t timeout_ms, CommandDone done);
  // Reverts an earlier clipping, learning-rate or mode command by sending its inverse
  // (an audited command of its own). kNotFound for an unknown command,
  // kFailedPrecondition for one that cannot be undone.
  Status Undo(const std::string& run_id, const std::string& command_id, int64_t timeout_ms, CommandDone done);
  // Merges detector threshold and guard policy overrides into a live run's config. Bad
  // keys or values are refused at once (kInvalidArgument naming the key); otherwise the
  // run's detectors are rebuilt from its stored steps on the rebuild thread and `done`
  // gets the updated run.
  Status UpdatePolicy(const std::string& run_id, const std::map<std::string, double>& thresholds,
                      const std::map<std::string, double>& policy, PolicyDone done);
  // The run's commands from the store, each with its effect (the run before and after).
  // Reads the store only.
  std::vector<v1::CommandRecord> ListCommands(const std::string& run_id) const;
  // Subscribes a watcher; it gets a Run snapshot first. False if the run is unknown.
  bool Watch(const std::string& run_id, Watcher* watcher);
  void Unwatch(const std::string& run_id, Watcher* watcher);
  // A plain-text diagnosis of the run. Reads the store only.
  std::string Explain(const std::string& run_id) const;

  // An alert from Alertmanager about a run becomes one of its events (kind "alert").
  // Returns false when the run is unknown.
  bool RecordAlert(const std::string& run_id, const std::string& alertname, const std::string& severity,
                   const std::string& status, const std::string& summary);

  // Housekeeping driven by the caller's timer: stalls, command timeouts, retention,
  // run headers to the store.
  void Tick();
  // Blocks until the rebuilds queued before the call are done (for tests and shutdown).
  void AwaitRebuilds();

 private:
  struct Rebuild {
    std::shared_ptr<RunState> run;
    PolicyDone done;  // may be empty
  };

  std::shared_ptr<RunState> Find(const std::string& run_id) const;  // short lock on mu_
  std::shared_ptr<RunState> FindOrLoad(const std::string& run_id);  // an ended run from the store
  std::vector<std::shared_ptr<RunState>> Snapshot() const;
  std::unique_ptr<RunState> Stored(v1::Run run) const;
  Status CheckTakeover(const RunState& run, const v1::Hello& hello) const;
  void Bind(RunState& run, const v1::Hello& hello);  // requires run.mu
  void StartDetectors(RunState& run);                  // fresh detectors and policy; requires run.mu
  void MakePolicy(RunState& run);                      // requires run.mu
  void Issue(RunState& run, v1::Command command, CommandDone done, int64_t timeout_ms);  // requires run.mu
  void Publish(RunState& run, const v1::RunUpdate& update);                              // requires run.mu
  void SetState(RunState& run, v1::RunState state);                                      // requires run.mu
  void Persist(RunState& run);                                                           // requires run.mu
  // `sample` is the step's, already converted (null for an eval's events: no verdict).
  void HandleEvents(RunState& run, const v1::StepReport& step, const detect::StepSample* sample,
                    std::vector<detect::Event> found, StreamSink& sink);                 // requires run.mu
  v1::Event RecordEvent(RunState& run, detect::Event& raw);                              // requires run.mu

  // Data parallel (hub_ranks.cc). All require run.mu.
  Status CheckRankTakeover(const RunState& run, const v1::Hello& hello) const;
  void OnRankStep(RunState& run, uint32_t rank, std::shared_ptr<const v1::StepReport> step, StreamSink& sink);
  void NoteRankStep(RunState& run, uint32_t rank, const v1::StepReport& step);
  void MarkRank(RunState& run, uint32_t rank, const v1::Hello* hello, bool connected, bool finished);
  void CloseRank(RunState& run, uint32_t rank, bool clean);
  bool AnyStreamOpen(const RunState& run) const;
  void WatchJob(RunState& run, int64_t now);
  void LoadRanks(RunState& run) const;
  void Housekeep(RunState& run, int64_t now);                                            // requires run.mu
  bool Evictable(const RunState& run, int64_t now) const;                                // requires run.mu

  // The rebuild thread (hub_rebuild.cc).
  void QueueRebuild(std::shared_ptr<RunState> run, PolicyDone done);
  void RebuildLoop();
  void RebuildDetectors(const Rebuild& job);

  HubOptions options_;
  store::Store& store_;
  metrics::Exporter& exporter_;
  const Clock& clock_;

  // runs_ only. It may be held while a run's lock is taken (eviction), never the reverse.
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<RunState>> runs_;
  std::mutex hello_mu_;             // serialises hellos: the live-run limit is checked and taken in one step
  std::atomic<size_t> live_{0};     // runs running or disconnected
  std::atomic<uint64_t> next_command_{1};

  std::mutex rebuild_mu_;
  std::condition_variable rebuild_cv_;
  std::deque<Rebuild> rebuilds_;
  size_t rebuilds_started_ = 0, rebuilds_done_ = 0;
  bool stopping_ = false;
  std::thread rebuilder_;
};

}  // namespace gradwatch::monitor
