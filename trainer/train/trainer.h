// The training loop of gradwatch-train: U-Net segmentation with the case's Jaccard
// loss, monitored through gradwatch::torch, with fault injection to reproduce the case.
// No torch in this header, so main.cc compiles fast.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"

namespace gradwatch::train {

struct CommandSummary {
  std::string id, action, detail;
  uint64_t step = 0;
  bool applied = false;
};

struct TrainSummary {
  std::string run_id;
  std::string device;
  int64_t steps_run = 0;
  double final_train_loss = 0;     // mean over the last 10 steps
  double final_grad_norm = 0;      // mean over the last 10 steps
  double val_loss = 0, val_jaccard_soft = 0, val_jaccard_hard = 0, val_accuracy = 0;
  bool collapsed = false;          // final train loss >= 0.99 and val hard Jaccard <= 0.01
  bool stopped_by_command = false;
  int stopped_by_signal = 0;       // the signal (SIGTERM, SIGINT) that ended training early, or 0
  uint64_t updates_skipped = 0;
  uint64_t updates_vetoed = 0;     // gated verdicts that changed an update (skip, clip, lower LR)
  uint64_t gate_timeouts = 0;
  std::string monitor_refused;     // why the monitor refused the run at the end, "" = it was not
  double seconds = 0;
  std::vector<double> loss_curve;  // every step's training loss, in order
  std::vector<CommandSummary> commands;
};

// Runs the whole training. Throws std::runtime_error for a configuration the data or the
// device cannot satisfy (e.g. "device: cuda requested but LibTorch has no CUDA").
// When `interrupt` becomes non-zero (a signal number), training ends at the next step
// boundary as after a stop command: a last evaluation, everything delivered.
TrainSummary Train(const TrainConfig& config, const std::atomic<int>* interrupt = nullptr);

// The summary as a JSON object (what --summary-json writes).
std::string SummaryJson(const TrainSummary& summary);

}  // namespace gradwatch::train
