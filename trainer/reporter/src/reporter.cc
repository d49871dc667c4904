#include "gradwatch/reporter/reporter.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "gradwatch/reporter/spool.h"
#include "gradwatch/v1/telemetry.grpc.pb.h"
#include "gradwatch/common/happens_before.h"

namespace gradwatch::reporter {
namespace {

constexpr size_t kWriteWindow = 256;  // messages queued on one stream at most

using Clock = std::chrono::steady_clock;

uint64_t StepOf(const v1::TrainerMessage& m) {
  return m.has_step() ? m.step().step() : m.eval().step();
}

// A non-zero random id for Hello.trainer_instance.
uint64_t RandomInstance() {
  std::random_device rd;
  uint64_t v = 0;
  while (v == 0) v = (uint64_t{rd()} << 32) | rd();
  return v;
}

}  // namespace

class Stream;

struct Reporter::Impl {
  Impl(ReporterOptions o, v1::Hello h) : options(std::move(o)), hello(std::move(h)) {
    // Names this process to the monitor (and in the spool, so a replay is recognised).
    if (hello.trainer_instance() == 0) hello.set_trainer_instance(RandomInstance());
    grpc::ChannelArguments args;
    // Find a half-open connection within 20 s (ping every 8 s, give up 8 s later), even idle.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 8'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 8'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options.backoff_max.count()));
    channel = grpc::CreateCustomChannel(options.address, ChannelCredentials(options.tls), args);
    if (!options.spool_path.empty()) {
      spool = std::make_unique<Spool>(options.spool_path, options.spool_max_bytes, hello);
      if (!spool->error().empty()) Warn(spool->error() + "; reports past the buffer will be dropped");
    }
    stub = v1::Telemetry::NewStub(channel);
    sender = std::thread([this] { SendLoop(); });
  }

  void SendLoop();
  void Overflow(v1::TrainerMessage m);  // requires mu
  void Enqueue(v1::TrainerMessage m);   // the bounded buffer, overflowing to the spool; requires mu
  // Everything reported is acknowledged, the spool included. Requires mu.
  bool Delivered() const { return buffer.empty() && (!spool || spool->records() == 0); }
  // Whether the monitor has stored `m`: a step by its step's ack; an eval by the evals' own
  // ack, or with its step from a monitor that does not send one (see Ack in telemetry.proto).
  bool Acked(const v1::TrainerMessage& m) const {
    if (m.has_step() || !eval_acks) return StepOf(m) <= stats.acked_through;
    return m.eval().step() <= evals_acked_through;
  }
  void OnMessage(const v1::MonitorMessage& m);
  void OnStreamDone(const grpc::Status& status);
  void Feed(std::unique_lock<std::mutex>& lock);
  // Messages waiting for the sender's tick on an accepted stream. Requires mu.
  bool Backlog() const {
    return stream && stream_accepted &&
           (next_send < buffer.size() || spool_next < spool_resend.size() || !acks.empty() || closing);
  }
  // How long an idle sender sleeps: a heartbeat goes out at most this late.
  std::chrono::milliseconds IdleTick() const {
    return std::max(options.send_interval, options.heartbeat_interval / 8);
  }
  // Writes what is pending now, from the calling thread, if the stream is accepted and only
  // the newest report is unsent (always, for a gated one); else the sender's tick does.
  // Requires mu.
  void FeedFromCaller(bool must_send);
  void Heartbeat();  // requires mu and an accepted stream
  // Rank > 0 of a data-parallel job: commands and verdicts are rank 0's alone.
  bool follower() const { return hello.world_size() > 1 && hello.rank() != 0; }
  void Warn(const std::string& line) {
    if (!options.log_warnings) return;
    // One write per line: the lines of ranks sharing a terminal stay whole.
    std::cerr << (hello.world_size() > 1 ? "gradwatch[rank " + std::to_string(hello.rank()) + "]: " : "gradwatch: ") +
                     line + "\n"
              << std::flush;
  }

  ReporterOptions options;
  v1::Hello hello;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Telemetry::Stub> stub;

  mutable std::mutex mu;
  std::condition_variable wake;     // the sender thread
  std::condition_variable changed;  // Flush and AwaitVerdict
  std::deque<v1::TrainerMessage> buffer;  // unacknowledged steps and evals, in order
  std::unique_ptr<Spool> spool;           // older reports that did not fit in the buffer
  uint64_t spooled_through = 0;           // highest step in the spool
  uint64_t spooled_evals_through = 0;     // highest step of an eval in the spool
  bool eval_acks = false;                 // the monitor acknowledges evals apart from steps
  uint64_t evals_acked_through = 0;
  std::vector<v1::TrainerMessage> spool_resend;  // the spool, loaded for this stream
  size_t spool_next = 0;
  size_t next_send = 0;                   // index in buffer of the next to send on this stream
  std::deque<v1::TrainerMessage> acks;    // command acks to send
  std::vector<v1::Command> commands;
  std::map<uint64_t, v1::Verdict> verdicts;
  ReporterStats stats;
  Stream* stream = nullptr;
  bool stream_done = false;
  bool stream_accepted = false;  // the monitor answered the hello
  bool closing = false;
  bool stopped_early = false;  // Close(stopped): the goodbye says the run was stopped
  bool stopping = false;
  bool give_up = false;  // the monitor refused the hello: reconnecting cannot help
  bool warned = false;
  // The training thread's phase (SetPhase, its only writer), published with a sequence lock:
  // phase_seq is odd while the fields change, and a reader that sees it change retries on
  // its next tick. Each SetPhase is a new entry (phase_seq + 2).
  std::atomic<uint64_t> phase_seq{0};
  std::atomic<uint64_t> phase_step{0};
  std::atomic<int> phase{v1::Heartbeat::PHASE_UNSPECIFIED};
  std::atomic<int64_t> phase_since{0};     // steady clock, nanoseconds
  std::atomic<int64_t> phase_unix_ms{0};   // wall clock, for the message
  uint64_t heartbeat_entry = 1;            // phase_seq of the last heartbeat's phase (odd: none)
  Clock::time_point heartbeat_at;          // when it was sent
  std::thread sender;
};

// One Telemetry.Stream call. Writes come from the sender thread (hence the hold);
// reactions never block.
class Stream final : public grpc::ClientBidiReactor<v1::TrainerMessage, v1::MonitorMessage> {
 public:
  Stream(Reporter::Impl* impl) : impl_(impl) {
    if (!impl_->options.token.empty()) context_.AddMetadata("authorization", "Bearer " + impl_->options.token);
    impl_->stub->async()->Stream(&context_, this);
    StartRead(&in_);
    AddHold();
    HappensBefore(this);
    StartCall();
  }

  void Write(const v1::TrainerMessage& m) {
    std::lock_guard<std::mutex> lock(mu_);
    if (half_closed_ || ended_) return;
    queue_.push_back(m);
    if (!writing_) Next();
  }

  size_t queued() const {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size();
  }

  void HalfClose() {
    std::lock_guard<std::mutex> lock(mu_);
    if (half_closed_ || ended_) return;
    half_closed_ = true;
    if (!writing_) WritesDone();
  }

  void Cancel() {
    HappensBefore(this);
    context_.TryCancel();
  }

  void OnWriteDone(bool ok) override {
    HappensAfter(this);
    bool wake_sender = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.pop_front();
      writing_ = false;
      if (!ok) queue_.clear();
      if (ended_) {
        queue_.clear();
      } else if (!queue_.empty()) {
        Next();
      } else if (half_closed_) {
        WritesDone();
      }
      // The sender is needed only when Feed stopped at the window: wake it once the queue
      // is down to half of it, not on every completion (a context switch per report).
      wake_sender = queue_.size() + 1 == kWriteWindow / 2;
    }
    if (wake_sender) impl_->wake.notify_all();
  }

  void OnReadDone(bool ok) override {
    HappensAfter(this);
    if (!ok) {
      // No write may start once the hold is gone: the call may already be finishing, and
      // an op started then would complete after the reactor is deleted. Writes check
      // ended_ under the same lock, so each either starts before (and OnDone waits for
      // it) or not at all.
      {
        std::lock_guard<std::mutex> lock(mu_);
        ended_ = true;
      }
      HappensBefore(this);
      RemoveHold();  // lets the call complete once in-flight writes are done
      return;
    }
    impl_->OnMessage(in_);
    HappensBefore(this);
    StartRead(&in_);
  }

  void OnDone(const grpc::Status& status) override {
    HappensAfter(this);
    impl_->OnStreamDone(status);
  }

 private:
  void Next() {  // requires mu_
    writing_ = true;
    HappensBefore(this);
    StartWrite(&queue_.front());
  }
  void WritesDone() {  // requires mu_
    HappensBefore(this);
    StartWritesDone();
  }

  Reporter::Impl* impl_;
  grpc::ClientContext context_;
  v1::MonitorMessage in_;
  mutable std::mutex mu_;
  std::deque<v1::TrainerMessage> queue_;  // front is in flight while writing_
  bool writing_ = false;
  bool half_closed_ = false;
  bool ended_ = false;  // reads are over: no new writes
};

void Reporter::Impl::OnMessage(const v1::MonitorMessage& m) {
  std::lock_guard<std::mutex> lock(mu);
  switch (m.kind_case()) {
    case v1::MonitorMessage::kAck: {
      uint64_t through = m.ack().stored_through_step();
      const bool was_accepted = stream_accepted;
      if (!stream_accepted) {
        stream_accepted = true;
        spool_next = 0;
        spool_resend = spool ? spool->Pending() : std::vector<v1::TrainerMessage>{};
        stats.connected = true;
        ++stats.connects;
        if (!stats.refused.empty()) Warn("the monitor accepted run " + hello.run_id() + ": guarded again");
        stats.refused.clear();
        if (warned) Warn("connected to the monitor at " + options.address + ", resending " +
                         std::to_string(buffer.size()) + " buffered reports");
        warned = false;
      }
      if (!was_accepted || closing) wake.notify_one();  // a backlog to send; Delivered may now hold
      stats.acked_through = std::max(stats.acked_through, through);
      if (m.ack().has_stored_evals_through_step()) {
        eval_acks = true;
        evals_acked_through = std::max(evals_acked_through, m.ack().stored_evals_through_step());
      }
      while (!buffer.empty() && Acked(buffer.front())) {
        buffer.pop_front();
        if (next_send > 0) --next_send;
      }
      const bool spool_stored = stats.acked_through >= spooled_through &&
                                (!eval_acks || evals_acked_through >= spooled_evals_through);
      if (spool && spool->records() > 0 && spool_stored && spool_next >= spool_resend.size()) {
        spool->Clear();  // everything spooled is stored
        spool_resend.clear();
        spool_next = 0;
      }
      break;
    }
    case v1::MonitorMessage::kCommand:
    case v1::MonitorMessage::kVerdict:
      if (follower()) {
        if (stats.ignored_commands++ == 0) {
          Warn("ignored a command or verdict sent to rank " + std::to_string(hello.rank()) +
               ": rank 0 takes them for the whole job");
        }
      } else if (m.has_command()) {
        commands.push_back(m.command());
      } else {
        verdicts[m.verdict().step()] = m.verdict();
      }
      break;
    case v1::MonitorMessage::kRejection:
      ++stats.rejections;
      Warn("the monitor refused a report: " + m.rejection().reason());
      break;
    default: break;
  }
  changed.notify_all();
}

void Reporter::Impl::OnStreamDone(const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(mu);
  stream_done = true;
  stats.connected = false;
  if (!status.ok()) stats.last_error = status.error_message();
  // A hello refused for good (bad input, credentials, a run id another trainer holds),
  // or for now (the monitor's limit on live runs: retried with backoff).
  const grpc::StatusCode code = status.error_code();
  bool final_refusal = code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::UNAUTHENTICATED ||
                       code == grpc::StatusCode::PERMISSION_DENIED || code == grpc::StatusCode::FAILED_PRECONDITION;
  bool refused = final_refusal || code == grpc::StatusCode::RESOURCE_EXHAUSTED;
  if (refused && !stream_accepted) {
    give_up = final_refusal;
    if (stats.refused != status.error_message()) {
      Warn("the monitor refused run " + hello.run_id() + ": " + status.error_message() +
           (final_refusal ? "; TRAINING CONTINUES UNGUARDED" : "; TRAINING CONTINUES UNGUARDED until it accepts (retrying)"));
    }
    stats.refused = status.error_message();
  } else if (!closing && !status.ok() && !warned) {
    warned = true;
    Warn("monitor at " + options.address + " unreachable (" + status.error_message() +
         "); training continues, reports are kept (up to " + std::to_string(options.max_buffered) +
         ") and sent when it is back");
  }
  wake.notify_all();
  changed.notify_all();
}

// Moves buffered messages onto the stream, up to the write window. Requires mu.
void Reporter::Impl::Feed(std::unique_lock<std::mutex>& lock) {
  while (!acks.empty()) {
    stream->Write(acks.front());
    acks.pop_front();
    ++stats.sent;
  }
  while (spool_next < spool_resend.size() && stream->queued() < kWriteWindow) {  // older first
    const v1::TrainerMessage& m = spool_resend[spool_next++];
    if (Acked(m)) continue;
    stream->Write(m);
    ++stats.sent;
  }
  if (spool_next < spool_resend.size()) return;
  while (next_send < buffer.size() && stream->queued() < kWriteWindow) {
    stream->Write(buffer[next_send++]);
    ++stats.sent;
  }
}

void Reporter::Impl::Heartbeat() {
  const uint64_t entry = phase_seq.load(std::memory_order_acquire);
  if (entry & 1) return;  // being written: next tick
  const uint64_t step = phase_step.load(std::memory_order_relaxed);
  const int in = phase.load(std::memory_order_relaxed);
  const int64_t since_ns = phase_since.load(std::memory_order_relaxed);
  const int64_t since_unix_ms = phase_unix_ms.load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (phase_seq.load(std::memory_order_relaxed) != entry || in == v1::Heartbeat::PHASE_UNSPECIFIED) return;
  const Clock::time_point since{std::chrono::nanoseconds(since_ns)};
  const Clock::time_point now = Clock::now();
  const Clock::time_point due = (entry == heartbeat_entry ? heartbeat_at : since) + options.heartbeat_interval;
  if (now < due) return;
  heartbeat_entry = entry;
  heartbeat_at = now;
  v1::TrainerMessage m;
  m.mutable_heartbeat()->set_step(step);
  m.mutable_heartbeat()->set_phase(static_cast<v1::Heartbeat::Phase>(in));
  m.mutable_heartbeat()->set_phase_unix_millis(since_unix_ms);
  stream->Write(m);
  ++stats.sent;
  ++stats.heartbeats;
}

void Reporter::Impl::SendLoop() {
  std::mt19937 jitter(std::random_device{}());
  auto backoff = options.backoff_initial;
  std::unique_lock<std::mutex> lock(mu);
  while (!stopping) {
    if (stream && stream_done) {
      Stream* done = stream;
      stream = nullptr;
      lock.unlock();
      delete done;
      lock.lock();
      bool was_accepted = stream_accepted;
      stream_accepted = false;
      next_send = 0;  // resend everything not acknowledged
      spool_resend.clear();
      spool_next = 0;
      if (closing) break;
      if (was_accepted) backoff = options.backoff_initial;
      // Exponential backoff with full jitter, cut short by Close().
      auto wait = std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(
          backoff.count() / 2, backoff.count())(jitter));
      wake.wait_for(lock, wait, [&] { return stopping || closing; });
      backoff = std::min(backoff * 2, options.backoff_max);
      continue;
    }
    if (!stream) {
      if (give_up || (closing && Delivered())) break;
      hello.set_resume_after_step(stats.acked_through);
      stream_done = false;
      stream = new Stream(this);
      v1::TrainerMessage m;
      *m.mutable_hello() = hello;
      stream->Write(m);
    }
    if (stream_accepted) {
      Feed(lock);
      Heartbeat();
      if (closing && Delivered() && acks.empty()) {
        v1::TrainerMessage bye;  // the run is over, not broken (ignored once half-closed)
        bye.mutable_goodbye()->set_last_step(stats.last_reported_step);
        bye.mutable_goodbye()->set_stopped(stopped_early);
        stream->Write(bye);
        stream->HalfClose();
      }
    }
    // Report() writes a step itself when nothing older is waiting, so this thread ticks at
    // send_interval only while there is a backlog (a reconnect's resend, the spool, evals,
    // command acks, a close); otherwise it sleeps until a heartbeat may be due or it is woken
    // (a stream accepted or ended, a write window half drained, Flush, Close).
    wake.wait_for(lock, Backlog() ? options.send_interval : IdleTick());
  }
  if (stream) {
    Stream* s = stream;
    if (!stream_done) s->Cancel();
    wake.wait(lock, [&] { return stream_done; });
    stream = nullptr;
    lock.unlock();
    delete s;
    lock.lock();
  }
  changed.notify_all();
}

void Reporter::Impl::Overflow(v1::TrainerMessage m) {
  uint64_t step = StepOf(m);
  if (spool && spool->Append(m)) {
    ++stats.spooled;
    spooled_through = std::max(spooled_through, step);
    if (m.has_eval()) spooled_evals_through = std::max(spooled_evals_through, step);
  } else {
    ++stats.dropped;
  }
}

Reporter::Reporter(ReporterOptions options, v1::Hello hello)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(hello))) {}

Reporter::~Reporter() { Close(std::chrono::seconds(2)); }

void Reporter::Impl::Enqueue(v1::TrainerMessage m) {
  if (buffer.size() >= options.max_buffered) {
    Overflow(std::move(buffer.front()));
    buffer.pop_front();
    if (next_send > 0) --next_send;
  }
  buffer.push_back(std::move(m));
}

void Reporter::Report(const v1::StepReport& step) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Impl& s = *impl_;
  ++s.stats.reported;
  s.stats.last_reported_step = std::max(s.stats.last_reported_step, step.step());
  v1::TrainerMessage m;
  *m.mutable_step() = step;
  s.Enqueue(std::move(m));
  // A gated trainer waits on this one: written now whatever is before it.
  s.FeedFromCaller(step.awaiting_verdict());
}

void Reporter::Impl::FeedFromCaller(bool must_send) {
  if (!stream || !stream_accepted || stream_done) {
    if (must_send) wake.notify_one();
    return;
  }
  // Nothing older waits: one write here, and no thread hop. With a backlog the sender is
  // ticking; Feed keeps the order either way (it sends from next_send on).
  if (!must_send && (next_send + 1 != buffer.size() || spool_next < spool_resend.size() || !acks.empty())) return;
  std::unique_lock<std::mutex> held(mu, std::adopt_lock);
  Feed(held);
  held.release();
}

void Reporter::Report(const v1::EvalReport& eval) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  v1::TrainerMessage m;
  *m.mutable_eval() = eval;
  impl_->Enqueue(std::move(m));
  impl_->FeedFromCaller(false);
}

std::vector<v1::Command> Reporter::TakeCommands() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<v1::Command> out;
  out.swap(impl_->commands);
  return out;
}

std::vector<v1::Command> Reporter::AwaitCommands(std::chrono::milliseconds deadline) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->changed.wait_for(lock, deadline, [&] { return !impl_->commands.empty(); });
  std::vector<v1::Command> out;
  out.swap(impl_->commands);
  return out;
}

void Reporter::AckCommand(const v1::CommandAck& ack) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  v1::TrainerMessage m;
  *m.mutable_command_ack() = ack;
  impl_->acks.push_back(std::move(m));
  impl_->wake.notify_one();
}

size_t Reporter::PendingCommands() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->commands.size();
}

void Reporter::SetPhase(uint64_t step, v1::Heartbeat::Phase phase) {
  Impl& s = *impl_;
  const uint64_t seq = s.phase_seq.load(std::memory_order_relaxed);
  s.phase_seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  s.phase_step.store(step, std::memory_order_relaxed);
  s.phase.store(phase, std::memory_order_relaxed);
  s.phase_since.store(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(),
                      std::memory_order_relaxed);
  s.phase_unix_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count(),
                        std::memory_order_relaxed);
  s.phase_seq.store(seq + 2, std::memory_order_release);
}

std::optional<v1::Verdict> Reporter::AwaitVerdict(uint64_t step, std::chrono::milliseconds deadline) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  Impl& s = *impl_;
  bool got = s.changed.wait_for(lock, deadline, [&] {
    return s.verdicts.count(step) > 0 || !s.stream_accepted || s.stopping;
  });
  auto it = s.verdicts.find(step);
  if (!got || it == s.verdicts.end()) {
    ++s.stats.gate_timeouts;
    return std::nullopt;
  }
  v1::Verdict v = it->second;
  s.verdicts.erase(s.verdicts.begin(), std::next(it));
  return v;
}

bool Reporter::Flush(std::chrono::milliseconds deadline) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  Impl& s = *impl_;
  s.wake.notify_all();
  return s.changed.wait_for(lock, deadline, [&] { return s.Delivered() || s.give_up; }) && s.Delivered();
}

void Reporter::Close(std::chrono::milliseconds deadline, bool stopped) {
  if (!impl_->sender.joinable()) return;
  bool delivered = Flush(deadline);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    Impl& s = *impl_;
    s.closing = true;
    s.stopped_early = stopped;
    if (!s.Delivered()) s.stopping = true;  // out of time: do not wait further
    if (!delivered && s.spool) {
      // Keep what was not delivered: `gradwatch replay SPOOL` sends it later.
      while (!s.buffer.empty()) {
        s.Overflow(std::move(s.buffer.front()));
        s.buffer.pop_front();
      }
      s.next_send = 0;
      s.Warn(std::to_string(s.spool->records()) + " reports are in the spool " + s.spool->path() +
             "; deliver them with: gradwatch replay " + s.spool->path());
    } else if (delivered && s.spool && s.spool->records() == 0) {
      std::remove(s.spool->path().c_str());  // nothing left to deliver
    }
  }
  impl_->wake.notify_all();
  // Give the half-close a moment to reach the monitor, then stop regardless.
  {
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->changed.wait_for(lock, std::chrono::seconds(2),
                            [&] { return impl_->stream == nullptr; });
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->sender.join();
}

ReporterStats Reporter::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

}  // namespace gradwatch::reporter
