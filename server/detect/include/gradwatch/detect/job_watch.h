// Data parallel: what only the job as a whole shows, on the monitor's clock rather than in
// rank 0's reports: a hang (no rank steps any more while every rank is connected), a rank whose
// reports fall behind, a rank whose stream died while the others wait for it. Pure: the hub
// passes every rank's stream status and the time (plain millis) from its timer; no gRPC, no
// clock of its own. Not thread-safe: one per run, called under the run's lock.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "gradwatch/detect/event.h"
#include "gradwatch/detect/stats.h"
#include "gradwatch/detect/thresholds.h"

namespace gradwatch::detect {

// One rank's stream as the hub sees it.
struct RankView {
  uint32_t rank = 0;
  bool connected = false;  // its stream is open
  bool finished = false;   // it said goodbye
  uint64_t last_step = 0;  // highest step it reported
  int64_t last_step_millis = 0;  // monitor clock when that step arrived (0 = none yet)
  // v1::Heartbeat::Phase of its last heartbeat (0 = none): 1 compute, 2 collective, 3 verdict.
  int phase = 0;
  // Trainer clock when it entered that phase (0 = none). Informational: the trainer's clock is
  // not compared with the monitor's.
  int64_t phase_since_millis = 0;
  int64_t last_heartbeat_millis = 0;  // monitor clock of its last heartbeat (0 = none)
};

// Each detection fires once per episode and is re-armed when its condition clears:
//   hang (critical): every rank is connected and none finished, and no rank has reported a new
//     step for longer than HangSeconds(), counted from the newest last_step_millis (a job that
//     has not stepped at all is left to the stalled-run alert). It names the rank whose last
//     heartbeat says compute, or whose heartbeats stopped (none, or none for
//     hang_heartbeat_seconds), when every other rank's fresh heartbeat says it waits in a
//     collective (or for the monitor's verdict); otherwise no rank, and the message says the job
//     as a whole stopped and what the ranks' heartbeats say. Value: seconds since the last step.
//     Clears when a step arrives (or a rank leaves).
//   rank_lag (warning): a connected, unfinished rank's last_step is more than rank_lag_steps
//     behind the highest last_step of the job. Clears when it is within rank_lag_steps / 2.
//     Value: the steps behind.
//   rank_lost (critical): a rank that was seen connected is not connected and did not finish,
//     for rank_lost_seconds (0: at the first Check), while at least one other rank is connected
//     and not finished. Clears when it reconnects or finishes, or no other rank is left. Value:
//     seconds since its last step or heartbeat (0 if none).
//     A rank this watch never saw connected (it never started, or was gone across a monitor
//     restart) is rank_lost once rank_join_seconds have passed since the watch first saw any
//     rank connected, while another rank runs; the message says it never joined. Value: the
//     seconds since that first rank.
// Event::step is the job's highest step (hang) or the rank's last step; Event::rank the rank.
class JobWatch {
 public:
  explicit JobWatch(const Thresholds& t);

  // Every new step of rank 0 (monitor clock): learns the typical interval between steps (the
  // median over the last 64 steps, per step when step numbers skip). A step at or below the
  // previous one (a rollback) only restarts the interval.
  void OnLeaderStep(uint64_t step, int64_t now_millis);

  // From the hub's timer (about once a second) with every rank of a run whose world_size >= 2;
  // returns the events that start now, in EventKind order (hang, rank_lag, rank_lost).
  std::vector<Event> Check(const std::vector<RankView>& ranks, int64_t now_millis);

  // The hang bound now: max(hang_min_seconds, hang_factor x the median step interval).
  double HangSeconds() const;

  // New thresholds for a run whose policy changed (UpdatePolicy); keeps what was learned and
  // seen, and the episodes in progress.
  void SetThresholds(const Thresholds& t) { t_ = t; }

 private:
  struct Rank {
    bool seen = false;     // seen connected
    bool lagging = false;  // rank_lag episode on
    bool lost = false;     // rank_lost episode on
    bool gone = false;     // disconnected without a goodbye, since gone_millis
    int64_t gone_millis = 0;
  };
  void CheckHang(const std::vector<RankView>& ranks, int64_t now, std::vector<Event>* out);
  Event Hang(const std::vector<RankView>& ranks, int64_t now, uint64_t step, double since) const;
  void CheckLag(const std::vector<RankView>& ranks, std::vector<Event>* out);
  void CheckLost(const std::vector<RankView>& ranks, int64_t now, std::vector<Event>* out);
  void CheckJoined(const RankView& v, size_t live, int64_t now, Rank* k, std::vector<Event>* out) const;

  Thresholds t_;
  Window intervals_;  // seconds per step between rank 0's recent steps
  bool any_leader_step_ = false;
  uint64_t leader_step_ = 0;
  int64_t leader_millis_ = 0;
  bool hung_ = false;
  int64_t first_live_millis_ = -1;  // when a rank was first seen connected; -1 = not yet
  std::map<uint32_t, Rank> ranks_;
};

}  // namespace gradwatch::detect
