// One run's live state in the hub, with the lock that guards it (see hub.h for the lock
// order). Private to the monitor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "command_ledger.h"
#include "gradwatch/detect/detectors.h"
#include "gradwatch/detect/incident.h"
#include "gradwatch/detect/job_watch.h"
#include "gradwatch/detect/policy.h"
#include "gradwatch/detect/run_detector.h"
#include "gradwatch/monitor/hub.h"

namespace gradwatch::monitor {

// One rank's stream of a data-parallel run. Rank 0's stream is the run's own (RunState's
// sink, max_step_seen, stored_through); for it only the clocks here are used.
struct RankStream {
  std::shared_ptr<StreamSink> sink;  // the live stream, or null
  uint64_t max_step_seen = 0;
  uint64_t stored_through = 0;
  int64_t last_step_millis = 0;       // monitor clock when its highest step arrived
  int64_t last_heartbeat_millis = 0;  // monitor clock of its last heartbeat
};

struct RunState {
  mutable std::mutex mu;  // guards everything below
  v1::Run run;
  std::unique_ptr<detect::RunDetector> detector;
  detect::IncidentTracker incidents;
  std::unique_ptr<policy::GuardPolicy> policy;
  std::shared_ptr<StreamSink> sink;  // the live stream, or null
  v1::Clipping clipping;             // in force on the last reported step
  // The last clipping command switched clipping on and came from the guard policy, which
  // releases only its own: kept here so that a rebuilt policy still knows (and, after a
  // restart, read back from the stored commands). clipping_commands counts them.
  bool clipping_by_policy = false;
  uint64_t clipping_commands = 0;
  uint64_t max_step_seen = 0;
  uint64_t stored_through = 0;
  uint64_t evals_stored_through = 0;  // of this stream's evals (rank 0's: evals are the leader's)
  std::set<Watcher*> watchers;
  CommandLedger ledger;
  int64_t ended_millis = 0;          // when it left running, for retention
  int64_t disconnected_millis = 0;
  bool metrics_removed = false;
  bool dirty = false;                // header changed since last persisted
  // A rebuild of the detectors in progress (hub_rebuild.cc): the samples processed since
  // it began, replayed into the new detectors when they are swapped in.
  uint64_t rebuild_generation = 0;
  bool rebuilding = false;
  std::vector<v1::StepReport> rebuild_tail;  // StepSample points into its report
  // Data parallel (run.world_size() >= 2): every rank's stream by rank (see RankStream),
  // shown in run.ranks; and what watches the job as a whole (hang, lag, lost ranks).
  std::map<uint32_t, RankStream> ranks;
  std::unique_ptr<detect::JobWatch> job_watch;
  bool data_parallel() const { return run.world_size() >= 2; }
};

}  // namespace gradwatch::monitor
