#include "telemetry_service.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>

#include "call.h"
#include "gradwatch/common/happens_before.h"

namespace gradwatch::monitor {
namespace {

using Reactor = grpc::ServerBidiReactor<v1::TrainerMessage, v1::MonitorMessage>;

constexpr size_t kMaxOutbox = 4096;  // past this, a slow reader loses acks (they are cumulative)

// The stream's write side, shared with the hub. Outlives the reactor: once the
// reactor is done, Send drops messages.
class Outbox final : public StreamSink {
 public:
  explicit Outbox(Reactor* reactor) : reactor_(reactor) {}

  void Send(const v1::MonitorMessage& message) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!reactor_ || finishing_) return;
    // Acks are cumulative: a queued, unsent ack is replaced rather than followed.
    if (message.has_ack() && queue_.size() > 1 && queue_.back().has_ack()) {
      queue_.back() = message;
      return;
    }
    if (queue_.size() >= kMaxOutbox && message.has_ack()) return;
    queue_.push_back(message);
    if (!writing_) StartNext();
  }

  void WriteDone(bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.pop_front();
    writing_ = false;
    if (!ok) queue_.clear();
    if (!queue_.empty()) StartNext();
    MaybeFinish();
  }

  // Finishes the RPC once the queued messages are written.
  void Finish(grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    finishing_ = true;
    status_ = std::move(status);
    MaybeFinish();
  }

  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    reactor_ = nullptr;
  }

 private:
  void StartNext() {  // requires mu_
    writing_ = true;
    HappensBefore(reactor_);
    reactor_->StartWrite(&queue_.front());
  }
  void MaybeFinish() {  // requires mu_
    if (finishing_ && !writing_ && !finished_ && reactor_) {
      finished_ = true;
      HappensBefore(reactor_);
      reactor_->Finish(status_);
    }
  }

  std::mutex mu_;
  Reactor* reactor_;
  std::deque<v1::MonitorMessage> queue_;  // front is in flight while writing_
  bool writing_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  grpc::Status status_;
};

class IngestStream final : public Reactor {
 public:
  // `streams` counts the open streams; past `max_streams` the stream is refused.
  IngestStream(Hub& hub, metrics::Exporter& exporter, std::atomic<size_t>& streams, size_t max_streams,
               const Auth& auth, grpc::CallbackServerContext* ctx)
      : hub_(hub), exporter_(exporter), streams_(streams), auth_(auth), ctx_(ctx),
        outbox_(std::make_shared<Outbox>(this)) {
    exporter_.StreamOpened();
    if (++streams_ > max_streams) {
      exporter_.MessageRejected("too_many_streams");
      outbox_->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                   "the monitor serves " + std::to_string(max_streams) +
                                       " telemetry streams at most; retry later"));
      return;
    }
    Read();
  }

  void OnReadDone(bool ok) override {
    HappensAfter(this);
    if (!ok) {  // the trainer half-closed, or the stream broke (then OnCancel runs too)
      outbox_->Finish(grpc::Status::OK);
      return;
    }
    auto start = std::chrono::steady_clock::now();
    if (!Handle()) return;
    exporter_.ObserveIngestSeconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    Read();
  }

  void OnWriteDone(bool ok) override {
    HappensAfter(this);
    outbox_->WriteDone(ok);
  }
  void OnCancel() override {
    HappensAfter(this);
    cancelled_ = true;
  }

  void OnDone() override {
    HappensAfter(this);
    // Finished only when the trainer said so: a half-close without a goodbye, or a
    // message gRPC could not parse (which also ends the reads), leaves it disconnected.
    if (!run_id_.empty()) hub_.OnStreamClosed(run_id_, outbox_.get(), goodbye_ && !cancelled_, rank_, stopped_);
    outbox_->Detach();
    exporter_.StreamClosed();
    --streams_;
    delete this;
  }

 private:
  void Read() {
    HappensBefore(this);
    StartRead(&in_);
  }

  // Returns false when the stream is being finished.
  bool Handle() {
    switch (in_.kind_case()) {
      case v1::TrainerMessage::kHello: return HandleHello();
      case v1::TrainerMessage::kStep:
        if (!RequireHello("step")) return false;
        exporter_.MessageReceived("step");
        // Moved out, not copied: the next read replaces the step anyway.
        hub_.OnStep(run_id_, std::make_shared<const v1::StepReport>(std::move(*in_.mutable_step())), *outbox_,
                    rank_);
        return true;
      case v1::TrainerMessage::kEval:
        if (!RequireHello("eval")) return false;
        exporter_.MessageReceived("eval");
        hub_.OnEval(run_id_, in_.eval(), *outbox_, rank_);
        return true;
      case v1::TrainerMessage::kCommandAck:
        if (!RequireHello("command_ack")) return false;
        exporter_.MessageReceived("command_ack");
        hub_.OnCommandAck(run_id_, in_.command_ack(), rank_);
        return true;
      case v1::TrainerMessage::kHeartbeat:
        if (!RequireHello("heartbeat")) return false;
        exporter_.MessageReceived("heartbeat");
        hub_.OnHeartbeat(run_id_, in_.heartbeat(), rank_);
        return true;
      case v1::TrainerMessage::kGoodbye:
        if (!RequireHello("goodbye")) return false;
        exporter_.MessageReceived("goodbye");
        goodbye_ = true;
        stopped_ = in_.goodbye().stopped();
        return true;
      default:
        exporter_.MessageRejected("empty_message");
        v1::MonitorMessage m;
        m.mutable_rejection()->set_reason("message has no kind set");
        outbox_->Send(m);
        return true;
    }
  }

  bool HandleHello() {
    exporter_.MessageReceived("hello");
    if (!run_id_.empty()) {
      exporter_.MessageRejected("second_hello");
      return Fail("a second hello on one stream; open a new stream for another run");
    }
    grpc::Status denied = auth_.Check(*ctx_, Role::kReporter, in_.hello().run_id());
    if (!denied.ok()) {
      exporter_.MessageRejected("unauthorized");
      outbox_->Finish(denied);
      return false;
    }
    Status refused = hub_.OnHello(in_.hello(), outbox_);
    if (!refused.ok()) {
      exporter_.MessageRejected(refused.code() == Status::Code::kInvalidArgument  ? "bad_hello"
                                : refused.code() == Status::Code::kResourceExhausted ? "too_many_runs"
                                                                                     : "run_taken");
      std::fprintf(stderr, "gradwatchd: refused a hello for run %s: %s\n", in_.hello().run_id().substr(0, 128).c_str(),
                   refused.message().c_str());
      outbox_->Finish(GrpcStatus(refused));
      return false;
    }
    run_id_ = in_.hello().run_id();
    rank_ = in_.hello().rank();
    return true;
  }

  bool RequireHello(const char* what) {
    if (!run_id_.empty()) return true;
    exporter_.MessageRejected("no_hello");
    return Fail(std::string("a ") + what + " message came before the hello; send Hello first");
  }

  bool Fail(const std::string& message) {
    outbox_->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message));
    return false;
  }

  Hub& hub_;
  metrics::Exporter& exporter_;
  std::atomic<size_t>& streams_;
  const Auth& auth_;
  grpc::CallbackServerContext* ctx_;
  std::shared_ptr<Outbox> outbox_;
  v1::TrainerMessage in_;
  std::string run_id_;
  uint32_t rank_ = 0;     // the hello's: which stream of a data-parallel run this is
  bool goodbye_ = false;  // reactions on one stream are serialised
  bool stopped_ = false;  // the goodbye said the run was stopped
  std::atomic<bool> cancelled_{false};
};

}  // namespace

TelemetryService::~TelemetryService() {
  // Each OnDone decrements the count last, after its calls into the hub and the exporter,
  // so this load also orders those calls before they are destroyed, for ThreadSanitizer
  // too (gRPC's own shutdown ordering is invisible to it).
  if (size_t open = streams_.load(std::memory_order_acquire); open != 0) {
    std::fprintf(stderr, "%s:%d: TelemetryService destroyed with %zu streams open; shut the grpc::Server down first\n",
                 __FILE__, __LINE__, open);
    std::abort();
  }
}

grpc::ServerBidiReactor<v1::TrainerMessage, v1::MonitorMessage>* TelemetryService::Stream(
    grpc::CallbackServerContext* context) {
  return new IngestStream(hub_, exporter_, streams_, max_streams_, auth_, context);
}

}  // namespace gradwatch::monitor
