// The training loop's connection to gradwatchd, in plain values: wraps the reporter and
// converts to and from the wire messages. No torch here (see types.h for why).
//
// Thread-safety: as the Reporter: any method from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gradwatch/torch/types.h"

namespace gradwatch::reporter {
class Reporter;
}

namespace gradwatch::torchmon {

struct LinkOptions {
  std::string address;                  // host:port of gradwatchd
  std::string run_id;
  std::vector<std::string> layer_names;  // in report order
  RunDescription run;
  Mode mode = Mode::kGuard;
  std::string device;                   // e.g. "cpu", "cuda:0"
  std::string spool;                    // "" = none; see reporter/spool.h
  uint32_t rank = 0, world_size = 1;    // data parallel: Hello.rank and Hello.world_size
  std::chrono::milliseconds heartbeat_interval{1'000};  // see reporter.h
};

struct LinkStats {
  uint64_t acked_through = 0, dropped = 0, gate_timeouts = 0;
  bool connected = false;  // a stream is up and the monitor accepted the run
  std::string refused;     // why the monitor refused the run ("" = not refused)
};

class MonitorLink {
 public:
  explicit MonitorLink(const LinkOptions& options);  // connects in the background
  ~MonitorLink();

  void Report(const StepRecord& step);  // never blocks
  void Report(const EvalRecord& eval);
  std::vector<Command> TakeCommands();
  size_t PendingCommands() const;  // received and not yet taken
  void Ack(const CommandAck& ack);
  // Lock-free; heartbeats while a phase lasts (reporter.h).
  void SetPhase(uint64_t step, Phase phase);
  // Gated mode: the verdict on `step`, or nullopt on timeout or without a stream.
  std::optional<Verdict> AwaitVerdict(uint64_t step, std::chrono::milliseconds deadline);
  void Close(std::chrono::milliseconds deadline, bool stopped = false);  // Reporter::Close
  LinkStats stats() const;

 private:
  std::unique_ptr<reporter::Reporter> reporter_;
};

// Commands as bytes, to hand from rank 0 to the other ranks: each a v1::Command (ToWire), as
// protobuf's length-delimited stream. Decode throws std::runtime_error on bytes Encode did not
// write.
std::string EncodeCommands(const std::vector<Command>& commands);
std::vector<Command> DecodeCommands(const std::string& bytes);

}  // namespace gradwatch::torchmon
