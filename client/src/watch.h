// `gradwatch watch` and the live part of `gradwatch launch`: a run's updates shown as they
// happen, as a view redrawn in place on a terminal or as plain lines otherwise.
#pragma once

#include <ostream>
#include <string>

#include "verbs.h"

namespace gradwatch::cli {

struct Followed {
  grpc::Status status;        // how the WatchRun stream ended (NOT_FOUND: no such run yet)
  v1::RunState state = v1::RUN_STATE_UNSPECIFIED;  // the run's last state seen
  bool updates = false;       // whether any update arrived
};

// Shows `run_id`'s updates on `out` until the run ends or the stream fails. A run that had
// already ended (the stream holds only its state) is shown as it ended: its last step and
// its events, read from the store.
Followed FollowRun(Client& c, const std::string& run_id, std::ostream& out, bool tty);

}  // namespace gradwatch::cli
