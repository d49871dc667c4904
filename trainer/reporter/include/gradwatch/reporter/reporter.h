// The trainer's side of Telemetry.Stream, with no torch dependency: any training loop
// can report steps through it.
//
// It never blocks the training thread. Report() appends to a bounded buffer and, when the
// stream is up and nothing older waits, starts the report's write itself (gRPC queues it;
// no thread is woken per step), then returns. A sender thread owns the connection (gRPC
// callback API): it sends the hello, sends any backlog, and reconnects with exponential
// backoff and jitter when the monitor is away.
// Reports stay in the buffer until the monitor acknowledges them as stored and are
// resent after a reconnect (the monitor deduplicates on (run_id, step)). When the buffer
// is full the oldest report is dropped and counted, never silently.
//
// Commands from the monitor queue up until the training thread takes them at a step
// boundary (TakeCommands) and acknowledges them (AckCommand). In gated mode the
// training thread waits for a step's verdict with a deadline (AwaitVerdict).
//
// Data parallel (Hello.world_size > 1): commands and verdicts go to rank 0 only; a reporter
// of another rank drops any that arrive on its stream (counted in ignored_commands). The
// training thread names the phase of the step it is in (SetPhase: a few atomic stores); while
// one phase lasts heartbeat_interval or longer the sender thread sends a Heartbeat, and again
// every interval while it lasts: how the monitor tells a rank stuck in its own work from the
// ranks waiting for it in a collective.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gradwatch/reporter/channel.h"
#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::reporter {

struct ReporterOptions {
  std::string address;                        // host:port of gradwatchd
  std::string token;                          // bearer token (a reporter token for this run), "" = none
  TlsFiles tls;                               // TLS to the monitor; none = plain
  size_t max_buffered = 100'000;              // unacknowledged reports kept for resend
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{5'000};
  // Report() writes a report to the stream itself when nothing older is waiting (a gated
  // report always), so no thread wakes per step. A backlog (a reconnect's resend, the spool,
  // command acks) is sent by the sender thread on this tick; an idle sender wakes every
  // max(send_interval, heartbeat_interval / 8) for heartbeats.
  std::chrono::milliseconds send_interval{5};
  bool log_warnings = true;                   // one line on stderr when the monitor is unreachable
  // Beyond max_buffered, and for whatever is undelivered at Close, reports go to this
  // append-only spool (see spool.h) instead of being dropped; "" = no spool.
  std::string spool_path;
  uint64_t spool_max_bytes = uint64_t{1} << 30;
  // A Heartbeat once the training thread has been this long in one phase (SetPhase), then
  // again every interval while the phase lasts; sent by the sender thread only.
  std::chrono::milliseconds heartbeat_interval{1'000};
};

struct ReporterStats {
  uint64_t reported = 0;       // Report() calls
  uint64_t sent = 0;           // messages written to a stream (resends included)
  uint64_t acked_through = 0;  // highest step the monitor has stored
  uint64_t dropped = 0;        // reports dropped because the buffer (and the spool) was full
  uint64_t spooled = 0;        // reports written to the spool
  uint64_t connects = 0;       // streams opened and accepted
  uint64_t rejections = 0;     // reports the monitor refused in-band
  uint64_t gate_timeouts = 0;  // verdicts that did not come in time
  uint64_t heartbeats = 0;     // heartbeats written to a stream
  uint64_t ignored_commands = 0;  // commands and verdicts dropped: this rank is not rank 0
  uint64_t last_reported_step = 0;  // highest step passed to Report()
  bool connected = false;
  std::string last_error;      // why the last stream ended, "" if none
  // Why the monitor refused this run ("" while it is guarded or still connecting). Set
  // when a hello is refused; a refusal that may pass (the monitor's run limit) is retried
  // with backoff and cleared once a hello is accepted. Training continues unguarded
  // meanwhile: callers should say so on every line they print.
  std::string refused;
};

class Reporter {
 public:
  // Starts the sender thread; connecting happens in the background.
  Reporter(ReporterOptions options, v1::Hello hello);
  // Close(2 s) if not closed.
  ~Reporter();
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  void Report(const v1::StepReport& step);
  void Report(const v1::EvalReport& eval);

  // Commands received and not yet taken, in arrival order.
  std::vector<v1::Command> TakeCommands();
  // As TakeCommands, but waits up to `deadline` for at least one.
  std::vector<v1::Command> AwaitCommands(std::chrono::milliseconds deadline);
  void AckCommand(const v1::CommandAck& ack);
  // Commands received and not yet taken.
  size_t PendingCommands() const;

  // The training thread is now in `phase` of `step` (PHASE_UNSPECIFIED: between runs, no
  // heartbeat). Lock-free: a few atomic stores, safe on every step.
  void SetPhase(uint64_t step, v1::Heartbeat::Phase phase);

  // Gated mode: waits up to `deadline` for the monitor's verdict on `step` (reported
  // with awaiting_verdict set). Returns nullopt on timeout or when no stream is up
  // (fail-open; counted in gate_timeouts).
  std::optional<v1::Verdict> AwaitVerdict(uint64_t step, std::chrono::milliseconds deadline);

  // Waits until every report is acknowledged or `deadline` passes; true if all were.
  bool Flush(std::chrono::milliseconds deadline);
  // Flushes, then half-closes the stream (the run is finished) and stops the thread.
  // `stopped`: the training ended early on request (Goodbye.stopped): the monitor shows the
  // run stopped rather than finished.
  void Close(std::chrono::milliseconds deadline, bool stopped = false);

  ReporterStats stats() const;

  struct Impl;  // opaque; public only so the stream reactor in reporter.cc can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace gradwatch::reporter
