// A gradwatchd in-process for tests and benchmarks of torch code, in plain values: the
// monitor's headers bring protobuf, which must stay out of torch translation units.
#pragma once

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "gradwatch/torch/types.h"

namespace gradwatch::torchmon::testing {

struct StoredStep {
  uint64_t step = 0;
  Clip clip;
  double learning_rate = 0;
  bool update_skipped = false;
  uint64_t rolled_back_to = 0;
};

struct CommandResult {
  bool acknowledged = false;
  uint64_t applied_at_step = 0;
  bool applied = false;
  std::string detail;
};

class TestMonitor {
 public:
  // Listens on 127.0.0.1:0 with a fresh data folder named after `name`.
  explicit TestMonitor(const std::string& name);
  ~TestMonitor();

  std::string address() const;
  uint64_t StepsOf(const std::string& run_id) const;  // 0 for an unknown run
  // Sends `command` to a live run; the future resolves on the trainer's ack or timeout.
  std::future<CommandResult> Send(const std::string& run_id, const Command& command, int timeout_ms);
  // Shuts the monitor down (draining the store) and reads the run's stored steps.
  std::vector<StoredStep> StoredSteps(const std::string& run_id);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gradwatch::torchmon::testing
