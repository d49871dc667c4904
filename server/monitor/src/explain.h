// A plain-text diagnosis of one run, from its record: what happened at which step, which
// layer went first, what was done and what changed, and a suggested fix. A pure function
// of the stored data, so it is the same live and after a restart.
#pragma once

#include <string>
#include <vector>

#include "gradwatch/v1/runs.pb.h"

namespace gradwatch::monitor {

// `steps` in step order (may be a prefix or a sample of the run; more is better).
std::string ExplainRun(const v1::Run& run, const std::vector<v1::Event>& events,
                       const std::vector<v1::CommandRecord>& commands,
                       const std::vector<v1::StepReport>& steps);

}  // namespace gradwatch::monitor
