#include "names.h"

namespace gradwatch::v1 {

const char* ActionName(const Command& command) {
  switch (command.action_case()) {
    case Command::kSetClipping: return "set_clipping";
    case Command::kScaleLearningRate: return "scale_learning_rate";
    case Command::kSkipStep: return "skip_step";
    case Command::kRollback: return "rollback";
    case Command::kStop: return "stop";
    case Command::kSetMode: return "set_mode";
    default: return "none";
  }
}

const char* StateName(RunState state) {
  switch (state) {
    case RUN_STATE_RUNNING: return "running";
    case RUN_STATE_DISCONNECTED: return "disconnected";
    case RUN_STATE_FINISHED: return "finished";
    case RUN_STATE_STOPPED: return "stopped";
    case RUN_STATE_FAILED: return "failed";
    default: return "unknown";
  }
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JOB_STATE_QUEUED: return "queued";
    case JOB_STATE_RUNNING: return "running";
    case JOB_STATE_SUCCEEDED: return "succeeded";
    case JOB_STATE_FAILED: return "failed";
    case JOB_STATE_STOPPED: return "stopped";
    case JOB_STATE_LOST: return "lost";
    default: return "unknown";
  }
}

bool JobEnded(JobState state) {
  return state == JOB_STATE_SUCCEEDED || state == JOB_STATE_FAILED || state == JOB_STATE_STOPPED ||
         state == JOB_STATE_LOST;
}

const char* ModeName(Mode mode) {
  switch (mode) {
    case MODE_OBSERVE: return "observe";
    case MODE_GATED: return "gated";
    default: return "guard";
  }
}

}  // namespace gradwatch::v1
