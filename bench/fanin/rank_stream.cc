#include "rank_stream.h"

#include <algorithm>
#include <cmath>

#include "gradwatch/common/happens_before.h"

namespace gradwatch::bench {

void LatencyHistogram::Record(SteadyClock::duration d) {
  double us = std::max(1.0, std::chrono::duration<double, std::micro>(d).count());
  size_t bucket = std::min(kBuckets - 1, static_cast<size_t>(8 * std::log2(us)));
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
}

LatencyHistogram::Counts LatencyHistogram::Snapshot() const {
  Counts out;
  for (size_t i = 0; i < kBuckets; ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

double LatencyHistogram::QuantileMs(const Counts& later, const Counts& earlier, double q) {
  uint64_t total = 0;
  for (size_t i = 0; i < kBuckets; ++i) total += later[i] - earlier[i];
  if (total == 0) return 0;
  uint64_t seen = 0;
  size_t i = 0;
  for (; i < kBuckets; ++i) {
    seen += later[i] - earlier[i];
    if (seen >= q * total) break;
  }
  return std::exp2((std::min(i, kBuckets - 1) + 1) / 8.0) / 1e3;  // the bucket's upper bound, µs -> ms
}

void StreamCounters::Problem(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  if (first_problem_.empty()) first_problem_ = what;
}

std::string StreamCounters::FirstProblem() const {
  std::lock_guard<std::mutex> lock(mu_);
  return first_problem_;
}

RankStream::RankStream(v1::Telemetry::Stub& stub, const v1::Hello& hello, StreamCounters& counters)
    : counters_(counters) {
  stub.async()->Stream(&context_, this);
  v1::TrainerMessage first;
  *first.mutable_hello() = hello;
  {
    std::lock_guard<std::mutex> lock(mu_);
    AddHold();  // writes come from the load threads, outside any reaction
    Queue(std::move(first));
  }
  HappensBefore(this);
  StartRead(&in_);
  StartCall();  // nothing runs before this: the write and the read wait for it
}

void RankStream::Send(v1::StepReport step) {
  const uint64_t n = step.step();
  v1::TrainerMessage m;
  *m.mutable_step() = std::move(step);
  std::lock_guard<std::mutex> lock(mu_);
  if (hold_released_ || closing_) return;
  unacked_.emplace_back(n, SteadyClock::now());
  sent_through_.store(n);
  counters_.reports.fetch_add(1, std::memory_order_relaxed);
  Queue(std::move(m));
}

void RankStream::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (hold_released_ || closing_) return;
  v1::TrainerMessage bye;
  bye.mutable_goodbye()->set_last_step(sent_through_.load());
  Queue(std::move(bye));
  closing_ = true;
  MaybeHalfClose();
}

void RankStream::Queue(v1::TrainerMessage message) {
  outbox_.push_back(std::move(message));
  size_t depth = outbox_.size(), seen = counters_.max_outbox.load(std::memory_order_relaxed);
  while (depth > seen && !counters_.max_outbox.compare_exchange_weak(seen, depth)) {
  }
  if (!writing_) StartNext();
}

void RankStream::StartNext() {
  writing_ = true;
  HappensBefore(this);
  StartWrite(&outbox_.front());
}

// After the goodbye is written: no more writes, and the hold goes so that OnDone can come.
void RankStream::MaybeHalfClose() {
  if (!closing_ || writing_ || !outbox_.empty() || hold_released_) return;
  HappensBefore(this);
  StartWritesDone();
  ReleaseHold();
}

void RankStream::ReleaseHold() {
  hold_released_ = true;
  RemoveHold();
}

void RankStream::OnWriteDone(bool ok) {
  HappensAfter(this);
  std::lock_guard<std::mutex> lock(mu_);
  outbox_.pop_front();
  writing_ = false;
  if (!ok) {  // the stream broke: OnReadDone(false) and OnDone follow
    outbox_.clear();
    if (!hold_released_) ReleaseHold();
    return;
  }
  if (!outbox_.empty() && !hold_released_) StartNext();
  MaybeHalfClose();
}

void RankStream::OnReadDone(bool ok) {
  HappensAfter(this);
  if (!ok) {  // the monitor ended the stream (or it broke): let OnDone come
    std::lock_guard<std::mutex> lock(mu_);
    if (!hold_released_ && !writing_) ReleaseHold();
    closing_ = true;  // a write in flight releases the hold in OnWriteDone
    return;
  }
  switch (in_.kind_case()) {
    case v1::MonitorMessage::kAck:
      OnAck(in_.ack().stored_through_step());
      break;
    case v1::MonitorMessage::kVerdict: {
      std::lock_guard<std::mutex> lock(mu_);
      verdicts_[in_.verdict().step()] = SteadyClock::now();
      changed_.notify_all();
      break;
    }
    case v1::MonitorMessage::kRejection:
      counters_.rejections.fetch_add(1);
      counters_.Problem("rejection at step " + std::to_string(in_.rejection().step()) + ": " +
                        in_.rejection().reason());
      break;
    case v1::MonitorMessage::kCommand:
      counters_.commands.fetch_add(1);
      break;
    default:
      break;
  }
  HappensBefore(this);
  StartRead(&in_);
}

// Cumulative: every queued report up to `through` is stored.
void RankStream::OnAck(uint64_t through) {
  counters_.acks.fetch_add(1, std::memory_order_relaxed);
  auto now = SteadyClock::now();
  std::lock_guard<std::mutex> lock(mu_);
  while (!unacked_.empty() && unacked_.front().first <= through) {
    counters_.ack_latency.Record(now - unacked_.front().second);
    unacked_.pop_front();
  }
  if (through > acked_through_.load()) acked_through_.store(through);
  connected_.store(true);
}

void RankStream::OnDone(const grpc::Status& status) {
  HappensAfter(this);
  if (!status.ok()) {
    counters_.failed.fetch_add(1);
    counters_.Problem("stream ended: " + std::to_string(status.error_code()) + " " + status.error_message());
  }
  std::lock_guard<std::mutex> lock(mu_);
  done_ = true;
  changed_.notify_all();
}

std::optional<SteadyClock::time_point> RankStream::AwaitVerdict(uint64_t step, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!changed_.wait_for(lock, timeout, [&] { return done_ || verdicts_.count(step) > 0; })) return std::nullopt;
  auto it = verdicts_.find(step);
  if (it == verdicts_.end()) return std::nullopt;
  auto when = it->second;
  verdicts_.erase(verdicts_.begin(), std::next(it));
  return when;
}

bool RankStream::WaitDone(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return done_; });
}

bool RankStream::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

}  // namespace gradwatch::bench
