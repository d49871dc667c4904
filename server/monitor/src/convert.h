// Conversions between the wire contract and the dependency-free detection library.
#pragma once

#include <string>

#include "gradwatch/detect/run_detector.h"
#include "gradwatch/detect/policy.h"
#include "gradwatch/v1/runs.pb.h"
#include "names.h"

namespace gradwatch::monitor {

detect::StepSample ToSample(const v1::StepReport& step);
detect::EvalSample ToSample(const v1::EvalReport& eval);
v1::Event ToProto(const detect::Event& event, const std::string& run_id, int64_t unix_millis);
v1::Command ToCommand(const policy::Action& action);
// The verdict message for `step` (proceed when the policy gave none).
v1::MonitorMessage ToVerdict(uint64_t step, const policy::GuardPolicy::Verdict& verdict);
policy::Mode ToPolicyMode(v1::Mode mode);

using v1::ActionName;
using v1::ModeName;
using v1::StateName;

}  // namespace gradwatch::monitor
