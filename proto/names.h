// Short, stable names for the contract's enums and command actions: the words used in
// metric labels, the CLI, the audit log and JSON. One place, so they cannot drift.
#pragma once

#include "gradwatch/v1/jobs.pb.h"
#include "gradwatch/v1/runs.pb.h"
#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::v1 {

// "set_clipping", "scale_learning_rate", "skip_step", "rollback", "stop", "set_mode", "none"
const char* ActionName(const Command& command);
// "running", "disconnected", "finished", "stopped", "failed", "unknown"
const char* StateName(RunState state);
// "queued", "running", "succeeded", "failed", "stopped", "lost", "unknown"
const char* JobStateName(JobState state);
// Whether a job in this state has ended (succeeded, failed, stopped or lost).
bool JobEnded(JobState state);
// "observe", "guard" (also for MODE_UNSPECIFIED), "gated"
const char* ModeName(Mode mode);

}  // namespace gradwatch::v1
