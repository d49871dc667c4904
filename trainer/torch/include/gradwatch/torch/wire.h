// Conversions between torchmon's plain values and the v1 wire messages. Protobuf only:
// never include this from a translation unit that includes torch (see types.h).
#pragma once

#include "gradwatch/torch/types.h"
#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::torchmon {

v1::Clipping ToWire(const Clip& clip);
Clip FromWire(const v1::Clipping& clip);
v1::Mode ToWire(Mode mode);
Mode FromWire(v1::Mode mode);
v1::RunConfig ToWire(const RunDescription& run);
v1::StepReport ToWire(const StepRecord& step);
v1::SystemMetrics ToWire(const SystemSample& system);
v1::EvalReport ToWire(const EvalRecord& eval);
v1::Command ToWire(const Command& command);
Command FromWire(const v1::Command& command);
v1::CommandAck ToWire(const CommandAck& ack);

}  // namespace gradwatch::torchmon
