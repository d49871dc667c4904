// Small helpers shared by the monitor's callback-API services.
#pragma once

#include <grpcpp/grpcpp.h>

#include "gradwatch/common/status.h"

namespace gradwatch::monitor {

// The gRPC status of a Status: its code picks the gRPC code, its message is the message.
inline grpc::Status GrpcStatus(const Status& status) {
  switch (status.code()) {
    case Status::Code::kOk: return grpc::Status::OK;
    case Status::Code::kInvalidArgument: return {grpc::StatusCode::INVALID_ARGUMENT, status.message()};
    case Status::Code::kNotFound: return {grpc::StatusCode::NOT_FOUND, status.message()};
    case Status::Code::kFailedPrecondition: return {grpc::StatusCode::FAILED_PRECONDITION, status.message()};
    case Status::Code::kResourceExhausted: return {grpc::StatusCode::RESOURCE_EXHAUSTED, status.message()};
  }
  return {grpc::StatusCode::UNKNOWN, status.message()};
}

// Ends a unary call at once with `status` (the response is already filled).
inline grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, grpc::Status status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

}  // namespace gradwatch::monitor
