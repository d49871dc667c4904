// The monitor's core: every run's live state, fed by telemetry streams in arrival
// order. For each report it validates, runs the run's detectors, lets the policy decide,
// updates metrics, queues the record for the store and tells watchers; commands and
// verdicts go back through the run's StreamSink. It knows nothing of gRPC's server
// machinery: streams and watchers are interfaces, time is a Clock.
//
// Thread-safety: every public method may be called from any thread. Sinks and watchers
// are called with the hub's lock held and must not call back into the hub.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "gradwatch/common/status.h"
#include "gradwatch/monitor/clock.h"
#include "gradwatch/v1/runs.pb.h"
#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::detect {
struct Event;
}
namespace gradwatch::store {
class Store;
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
};

// The highest step a report may carry: steps are stored as SQLite's signed 64-bit integers.
inline constexpr uint64_t kMaxStep = 9'223'372'036'854'775'807ull;

// What the caller of SendCommand gets once the trainer acknowledged or time ran out.
using CommandDone = std::function<void(const v1::CommandRecord& record, bool acknowledged)>;

class Hub {
 public:
  Hub(HubOptions options, store::Store& store, metrics::Exporter& exporter, const Clock& clock);
  ~Hub();

  // A stream's first message. On success binds `sink` as the run's stream and answers with
  // an Ack of what is stored; otherwise says why the hello was refused (the caller ends
  // the stream with the status of the code): kInvalidArgument for a malformed hello,
  // kFailedPrecondition for a run whose steps came from another trainer (see
  // Hello.trainer_instance), kResourceExhausted past max_runs live runs.
  Status OnHello(const v1::Hello& hello, std::shared_ptr<StreamSink> sink);
  // Reports on a stream whose hello was accepted. A bad report is refused in-band with a
  // Rejection naming what was wrong, and the stream stays open.
  void OnStep(const std::string& run_id, const v1::StepReport& step, StreamSink& sink);
  void OnEval(const std::string& run_id, const v1::EvalReport& eval, StreamSink& sink);
  void OnCommandAck(const std::string& run_id, const v1::CommandAck& ack);
  // The stream ended: `clean` when the trainer said goodbye (finished), false when it
  // broke. A run that never reported a step ends at once either way (nothing to resume).
  void OnStreamClosed(const std::string& run_id, const StreamSink* sink, bool clean);

  // Called by the store after a commit: acknowledges stored steps to their streams.
  void OnStored(const std::map<std::string, uint64_t>& stored_through);

  // Runs service.
  std::vector<v1::Run> ListRuns() const;
  std::optional<v1::Run> GetRun(const std::string& run_id) const;
  // Sends an operator (or other) command to a live run. `done` is called exactly once:
  // on the trainer's ack, on timeout (from Tick), or at once if the run has no stream.
  // Returns an error message when the command is malformed or the run unknown.
  std::string SendCommand(const std::string& run_id, v1::Command command,
                          int64_t timeout_ms, CommandDone done);
  // Reverts an earlier clipping, learning-rate or mode command by sending its inverse
  // (an audited command of its own). Returns an error message when it cannot be undone.
  std::string Undo(const std::string& run_id, const std::string& command_id, int64_t timeout_ms,
                   CommandDone done);
  // Merges detector threshold and guard policy overrides into a live run's config,
  // rebuilding its detectors from the stored steps. Returns an error naming the bad key.
  std::string UpdatePolicy(const std::string& run_id, const std::map<std::string, double>& thresholds,
                           const std::map<std::string, double>& policy, v1::Run* updated);
  // The run's commands from the store, each with its effect (the run before and after).
  std::vector<v1::CommandRecord> ListCommands(const std::string& run_id) const;
  // Subscribes a watcher; it gets a Run snapshot first. False if the run is unknown.
  bool Watch(const std::string& run_id, Watcher* watcher);
  void Unwatch(const std::string& run_id, Watcher* watcher);
  std::string Explain(const std::string& run_id) const;

  // An alert from Alertmanager about a run becomes one of its events (kind "alert").
  // Returns false when the run is unknown.
  bool RecordAlert(const std::string& run_id, const std::string& alertname, const std::string& severity,
                   const std::string& status, const std::string& summary);

  // Housekeeping driven by the caller's timer: stalls, command timeouts, retention,
  // run headers to the store.
  void Tick();

 private:
  struct RunEntry;
  RunEntry* Find(const std::string& run_id) const;  // requires mu_
  RunEntry* FindOrLoad(const std::string& run_id);  // an ended run back from the store; requires mu_
  size_t LiveRuns() const;                          // requires mu_
  std::unique_ptr<RunEntry> Stored(v1::Run run) const;
  Status CheckTakeover(const RunEntry& run, const v1::Hello& hello) const;
  RunEntry& LoadOrCreate(const v1::Hello& hello);    // requires mu_
  void Rebuild(RunEntry& run);                        // requires mu_
  void MakePolicy(RunEntry& run);                     // requires mu_
  void Issue(RunEntry& run, v1::Command command, CommandDone done, int64_t timeout_ms);
  void Publish(RunEntry& run, const v1::RunUpdate& update);
  void SetState(RunEntry& run, v1::RunState state);
  void Persist(RunEntry& run);
  void HandleEvents(RunEntry& run, const v1::StepReport& step,
                    std::vector<detect::Event> found, StreamSink& sink);

  HubOptions options_;
  store::Store& store_;
  metrics::Exporter& exporter_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<RunEntry>> runs_;
  uint64_t next_command_ = 1;
};

}  // namespace gradwatch::monitor
