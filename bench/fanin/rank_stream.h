// One rank's telemetry stream, as gRPC's callback API drives it: a reactor per stream, so
// that a few load threads can keep a thousand streams busy. Reports are queued in an
// outbox with one write in flight; acks, verdicts and rejections are read on gRPC's own
// threads, which only count, record and notify.
#pragma once

#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "gradwatch/v1/telemetry.grpc.pb.h"

namespace gradwatch::bench {

using SteadyClock = std::chrono::steady_clock;

// Durations in log-spaced buckets (8 per doubling, 1 µs to ~16 s), recorded from any
// thread without a lock.
class LatencyHistogram {
 public:
  static constexpr size_t kBuckets = 8 * 24;
  using Counts = std::array<uint64_t, kBuckets>;

  void Record(SteadyClock::duration d);
  Counts Snapshot() const;
  // The upper bound in ms of the bucket holding quantile q (0..1) of what was recorded
  // between `earlier` and `later`; 0 when nothing was.
  static double QuantileMs(const Counts& later, const Counts& earlier, double q);

 private:
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
};

// What every stream of the bench adds to; read from any thread.
class StreamCounters {
 public:
  std::atomic<uint64_t> reports{0};       // step reports queued
  std::atomic<uint64_t> acks{0};          // Ack messages read (the hello's included)
  std::atomic<uint64_t> rejections{0};    // Rejection messages read
  std::atomic<uint64_t> commands{0};      // Command messages read (a healthy run gets none)
  std::atomic<uint64_t> failed{0};        // streams that ended with a status other than OK
  std::atomic<size_t> max_outbox{0};      // most messages ever queued on one stream
  LatencyHistogram ack_latency;           // report queued -> the ack that covers it read
  void Problem(const std::string& what);  // keeps the first rejection or failed status
  std::string FirstProblem() const;       // "" when none

 private:
  mutable std::mutex mu_;
  std::string first_problem_;
};

class RankStream final : public grpc::ClientBidiReactor<v1::TrainerMessage, v1::MonitorMessage> {
 public:
  // Starts the call at once; the hello is its first message.
  RankStream(v1::Telemetry::Stub& stub, const v1::Hello& hello, StreamCounters& counters);
  // Requires done(): the owner waits for OnDone (Close(), then WaitDone()) first.
  ~RankStream() override = default;
  RankStream(const RankStream&) = delete;
  RankStream& operator=(const RankStream&) = delete;

  // Queues a report; never blocks. Dropped (and not counted) once the stream has ended.
  void Send(v1::StepReport step);
  // Queues a goodbye after everything sent, then half-closes.
  void Close();
  // Gated: the time the verdict on `step` was read, or nullopt when none came in time.
  std::optional<SteadyClock::time_point> AwaitVerdict(uint64_t step, std::chrono::milliseconds timeout);
  bool WaitDone(std::chrono::milliseconds timeout);
  void Cancel() { context_.TryCancel(); }  // ends the call; OnDone follows

  bool connected() const { return connected_.load(); }  // the hello was acknowledged
  uint64_t sent_through() const { return sent_through_.load(); }
  uint64_t acked_through() const { return acked_through_.load(); }
  bool done() const;

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  void Queue(v1::TrainerMessage message);  // requires mu_
  void StartNext();                        // requires mu_
  void MaybeHalfClose();                   // requires mu_
  void ReleaseHold();                      // requires mu_
  void OnAck(uint64_t through);

  StreamCounters& counters_;
  grpc::ClientContext context_;
  v1::MonitorMessage in_;  // read side: touched by OnReadDone only

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable changed_;
  std::deque<v1::TrainerMessage> outbox_;                             // front is in flight while writing_
  std::deque<std::pair<uint64_t, SteadyClock::time_point>> unacked_;  // step, when queued
  std::map<uint64_t, SteadyClock::time_point> verdicts_;              // step -> when read
  bool writing_ = false;
  bool closing_ = false;
  bool hold_released_ = false;  // no write may start after
  bool done_ = false;

  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> sent_through_{0};
  std::atomic<uint64_t> acked_through_{0};
};

}  // namespace gradwatch::bench
