// The checks on a hello's own content, before any run is looked at: the run id, the rank
// within the world size, layer names, free text and labels within the hub's limits, and the
// detector overrides. Refusals name the field and the limit.
#pragma once

#include "gradwatch/common/status.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::monitor {

// OK, or INVALID_ARGUMENT with the first problem found.
Status CheckHello(const v1::Hello& hello, const HubOptions& options);

}  // namespace gradwatch::monitor
