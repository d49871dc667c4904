// The training loop of gradwatch-train: U-Net segmentation with the case's Jaccard
// loss, monitored through gradwatch::torch, with fault injection to reproduce the case.
// No torch in this header, so main.cc compiles fast.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "gradwatch/torch/dist_env.h"
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
  int rank = 0, world_size = 1;    // data parallel: this process's rank of the job's
  int64_t steps_run = 0;           // the last step trained (the same on every rank)
  double final_train_loss = 0;     // mean over the last 10 steps (of the run's loss: every rank's mean)
  double final_grad_norm = 0;      // mean over the last 10 steps
  double val_loss = 0, val_jaccard_soft = 0, val_jaccard_hard = 0, val_accuracy = 0;
  bool collapsed = false;          // final train loss >= 0.99 and val hard Jaccard <= 0.01
  bool stopped_by_command = false;
  int stopped_by_signal = 0;       // the signal (SIGTERM, SIGINT) that ended training early, or 0
  bool stopped_with_job = false;   // data parallel: another rank was signalled, every rank stopped
  uint64_t updates_skipped = 0;
  uint64_t updates_vetoed = 0;     // gated verdicts that changed an update (skip, clip, lower LR)
  uint64_t gate_timeouts = 0;
  std::string monitor_refused;     // why the monitor refused the run at the end, "" = it was not
  double seconds = 0;
  std::vector<double> loss_curve;  // every step's training loss (the mean over ranks), in order
  std::vector<CommandSummary> commands;
  // The final parameters' fingerprint: equal on every rank of a healthy job.
  double param_sum = 0;            // every value as float64, added up
  std::string param_fnv1a64;       // FNV-1a 64 of their bytes, 16 hex digits
};

// Runs the whole training. Throws std::runtime_error for a configuration the data or the
// device cannot satisfy (e.g. "device: cuda requested but LibTorch has no CUDA").
// When `interrupt` becomes non-zero (a signal number), training ends at the next step
// boundary as after a stop command: a last evaluation, everything delivered.
//
// Data parallel (`dist` of more than one rank, dist_env.h): joins the job's process group,
// trains on this rank's shard of each global batch of config.batch items (ShardSampler; the
// batch must split evenly), with the gradients averaged by the Session (session.h). Every rank
// uses the same run id (rank 0's, generated or config.run_id), reports on its own stream and
// writes its own files: RankPath(spool / trace_csv, rank); only rank 0 writes checkpoint_dir.
// Faults with a rank hit that rank only. A signal on any rank stops every rank at the same
// step boundary, one step later than with one process. A collective that fails (a rank died)
// throws. Every log line names the rank.
TrainSummary Train(const TrainConfig& config, const std::atomic<int>* interrupt = nullptr,
                   const torchmon::DistEnv& dist = {});

// The summary as a JSON object (what --summary-json writes; rank R > 0 of a job writes it to
// RankPath(summary_json, R), with its rank, world_size and parameter checksum).
std::string SummaryJson(const TrainSummary& summary);

}  // namespace gradwatch::train
