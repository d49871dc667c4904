// Small helpers shared by the monitor's callback-API services.
#pragma once

#include <grpcpp/grpcpp.h>

namespace gradwatch::monitor {

// Ends a unary call at once with `status` (the response is already filled).
inline grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, grpc::Status status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

}  // namespace gradwatch::monitor
