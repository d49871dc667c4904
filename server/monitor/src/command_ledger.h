// One run's commands in flight: issued and sent, waiting for the trainer's ack or their
// deadline. The hub holds one per run, under the run's lock; the ledger itself is not
// thread-safe. InverseOf says what undoes a command.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gradwatch/common/status.h"
#include "gradwatch/monitor/hub.h"

namespace gradwatch::monitor {

class CommandLedger {
 public:
  struct Pending {
    v1::CommandRecord record;
    CommandDone done;  // may be empty (policy commands)
    int64_t deadline_millis = 0;
  };

  void Add(Pending pending);  // keyed by record.command().id()
  // The command `ack` answers, with the ack recorded; nullopt for an unknown or late ack.
  // With ranks (a data-parallel run) the ack is also added to the record's rank_acks and
  // the record is kept (the last kRecent) for the other ranks' acks.
  std::optional<Pending> Acknowledge(const v1::CommandAck& ack);
  // Data parallel: rank ack.rank()'s ack (rank >= 1) of a command in flight or acknowledged
  // recently. The record with the ack added when it was acknowledged already (to be stored
  // again); nullopt when it is still in flight (stored with rank 0's ack), unknown, or the
  // rank acked it before.
  std::optional<v1::CommandRecord> AddRankAck(const v1::CommandAck& ack);
  void set_ranks(bool ranks) { ranks_ = ranks; }
  // Commands whose deadline is at or before `now_millis`, removed.
  std::vector<Pending> Expire(int64_t now_millis);
  // Everything in flight, removed (the stream ended: no ack can come).
  std::vector<Pending> TakeAll();
  bool empty() const { return pending_.empty(); }

 private:
  static constexpr size_t kRecent = 256;
  std::map<std::string, Pending> pending_;
  bool ranks_ = false;
  std::map<std::string, v1::CommandRecord> recent_;  // acknowledged, by id (data parallel)
  std::vector<std::string> recent_order_;            // oldest first
};

// The command that reverts `original` (clipping back to what it was, the inverse learning
// rate scale, the previous mode), or kFailedPrecondition for a command that cannot be undone.
Status InverseOf(const v1::CommandRecord& original, v1::Command* undo);

}  // namespace gradwatch::monitor
