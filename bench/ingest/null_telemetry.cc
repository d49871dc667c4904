#include "null_telemetry.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <stdexcept>

namespace gradwatch::bench {
namespace {

using Reactor = grpc::ServerBidiReactor<v1::TrainerMessage, v1::MonitorMessage>;

class AckStream final : public Reactor {
 public:
  explicit AckStream(NullCounters& counters) : counters_(counters) { StartRead(&in_); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // half-closed or broken: finish once the last ack is written
      FinishWhenIdle();
      return;
    }
    counters_.messages.fetch_add(1, std::memory_order_relaxed);
    if (in_.has_step()) {
      Ack(in_.step().step());
    } else if (in_.has_eval()) {
      Ack(in_.eval().step());
    } else if (in_.has_hello()) {
      Ack(in_.hello().resume_after_step());  // the reporter waits for this to start
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) pending_ = false;  // the stream is gone: nothing more can be written
    if (pending_) {
      StartNext();
    } else {
      MaybeFinish();
    }
  }

  void OnDone() override { delete this; }

 private:
  void Ack(uint64_t step) {
    std::lock_guard<std::mutex> lock(mu_);
    through_ = std::max(through_, step);
    pending_ = true;  // replaces any ack queued behind the one in flight
    if (!writing_) StartNext();
  }

  void FinishWhenIdle() {
    std::lock_guard<std::mutex> lock(mu_);
    finishing_ = true;
    MaybeFinish();
  }

  void StartNext() {  // requires mu_; out_ is untouched until OnWriteDone
    out_.mutable_ack()->set_stored_through_step(through_);
    pending_ = false;
    writing_ = true;
    counters_.acks.fetch_add(1, std::memory_order_relaxed);
    StartWrite(&out_);
  }

  void MaybeFinish() {  // requires mu_
    if (finishing_ && !writing_ && !pending_ && !finished_) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  NullCounters& counters_;
  v1::TrainerMessage in_;
  std::mutex mu_;
  v1::MonitorMessage out_;
  uint64_t through_ = 0;
  bool pending_ = false;  // an ack of through_ is owed
  bool writing_ = false;
  bool finishing_ = false;
  bool finished_ = false;
};

}  // namespace

grpc::ServerBidiReactor<v1::TrainerMessage, v1::MonitorMessage>* NullTelemetryService::Stream(
    grpc::CallbackServerContext* context) {
  return new AckStream(counters_);
}

NullServer::NullServer(const std::string& listen) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(&service_);
  builder.SetMaxReceiveMessageSize(4 << 20);  // as the monitor
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) throw std::runtime_error("null server: cannot listen on " + listen);
}

NullServer::~NullServer() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace gradwatch::bench
