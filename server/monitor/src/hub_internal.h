// Helpers shared by the hub's source files (hub*.cc). Private to the monitor.
#pragma once

#include <cstdint>
#include <string>

#include "gradwatch/common/format.h"
#include "gradwatch/common/status.h"
#include "gradwatch/detect/thresholds.h"
#include "gradwatch/v1/runs.pb.h"
#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::monitor {

inline constexpr uint32_t kStepPage = 5'000;             // steps per store read when paging a run
inline constexpr size_t kExplainMaxSteps = 1'000'000;    // Explain reads at most this much of a run
inline constexpr uint64_t kEffectWindow = 20;            // steps before and after a command, for its effect
inline constexpr const char* kPolicyIssuer = "policy:guard";  // Command.issued_by of the guard's commands

inline bool Ended(v1::RunState s) {
  return s == v1::RUN_STATE_FINISHED || s == v1::RUN_STATE_STOPPED || s == v1::RUN_STATE_FAILED;
}

inline v1::MonitorMessage Rejection(uint64_t step, const std::string& reason) {
  v1::MonitorMessage m;
  m.mutable_rejection()->set_step(step);
  m.mutable_rejection()->set_reason(reason);
  return m;
}

// Steps stored through `through`, evals through `evals_through` (see Ack in telemetry.proto).
inline v1::MonitorMessage AckMessage(uint64_t through, uint64_t evals_through) {
  v1::MonitorMessage m;
  m.mutable_ack()->set_stored_through_step(through);
  m.mutable_ack()->set_stored_evals_through_step(evals_through);
  return m;
}

inline std::string Fmt(double v) { return FormatNumber(v, 4); }

// Why a step report cannot be taken ("" when it can), for a run of `layers` layers and
// `world` ranks; `reason` gets the rejection counter's label.
std::string StepRefusal(const v1::StepReport& step, int layers, uint32_t world, const char** reason);

// The run's detector thresholds: the defaults with its overrides (checked by CheckOverrides
// when they came in).
detect::Thresholds ThresholdsOf(const v1::RunConfig& config);

// Both override maps of a run config, checked by name and range.
Status CheckOverrides(const v1::RunConfig& config);

// Whether `command` switches clipping on for the guard policy (which releases only its own).
bool ClipsByPolicy(const v1::Command& command);

}  // namespace gradwatch::monitor
