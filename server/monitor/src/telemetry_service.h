// Telemetry.Stream on the callback API: one reactor per stream, deleting itself in
// OnDone. Reactions never block: reports go to the hub (which only enqueues), replies
// go through an outbox drained from OnWriteDone.
#pragma once

#include <atomic>

#include "auth.h"
#include "gradwatch/metrics/exporter.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/v1/telemetry.grpc.pb.h"

namespace gradwatch::monitor {

class TelemetryService final : public v1::Telemetry::CallbackService {
 public:
  TelemetryService(Hub& hub, metrics::Exporter& exporter, size_t max_streams, const Auth& auth)
      : hub_(hub), exporter_(exporter), max_streams_(max_streams), auth_(auth) {}
  // Destroy only after the grpc::Server serving it has shut down, which waits for every
  // stream's OnDone; aborts if a stream is still open.
  ~TelemetryService() override;

  grpc::ServerBidiReactor<v1::TrainerMessage, v1::MonitorMessage>* Stream(
      grpc::CallbackServerContext* context) override;

 private:
  Hub& hub_;
  metrics::Exporter& exporter_;
  size_t max_streams_;
  const Auth& auth_;
  std::atomic<size_t> streams_{0};
};

}  // namespace gradwatch::monitor
