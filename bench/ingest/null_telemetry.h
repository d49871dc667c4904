// The baseline the monitor is measured against: Telemetry.Stream served by a handler
// that does nothing but acknowledge. Per stream it reads every message and answers a
// cumulative Ack of the highest step seen, at once and coalesced (one write in flight;
// a newer ack replaces a queued one), the write discipline of the monitor's outbox,
// with no hub, detectors, metrics or store behind it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "gradwatch/v1/telemetry.grpc.pb.h"

namespace gradwatch::bench {

// Totals over every stream of a service: messages read, acks written.
struct NullCounters {
  std::atomic<uint64_t> messages{0};
  std::atomic<uint64_t> acks{0};
};

class NullTelemetryService final : public v1::Telemetry::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::TrainerMessage, v1::MonitorMessage>* Stream(
      grpc::CallbackServerContext* context) override;
  const NullCounters& counters() const { return counters_; }

 private:
  NullCounters counters_;
};

// The null service on its own gRPC server, configured as the monitor's is.
// Throws std::runtime_error when `listen` cannot be bound.
class NullServer {
 public:
  explicit NullServer(const std::string& listen);  // e.g. "127.0.0.1:0"
  ~NullServer();                                   // shuts down, 2 s grace for streams
  NullServer(const NullServer&) = delete;
  NullServer& operator=(const NullServer&) = delete;

  int port() const { return port_; }
  const NullCounters& counters() const { return service_.counters(); }

 private:
  NullTelemetryService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace gradwatch::bench
