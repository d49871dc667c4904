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
  std::optional<Pending> Acknowledge(const v1::CommandAck& ack);
  // Commands whose deadline is at or before `now_millis`, removed.
  std::vector<Pending> Expire(int64_t now_millis);
  // Everything in flight, removed (the stream ended: no ack can come).
  std::vector<Pending> TakeAll();
  bool empty() const { return pending_.empty(); }

 private:
  std::map<std::string, Pending> pending_;
};

// The command that reverts `original` (clipping back to what it was, the inverse learning
// rate scale, the previous mode), or kFailedPrecondition for a command that cannot be undone.
Status InverseOf(const v1::CommandRecord& original, v1::Command* undo);

}  // namespace gradwatch::monitor
