// gradwatch for any LibTorch training loop: report each step, apply the monitor's
// commands at step boundaries, and take the update decision around optimizer.step().
//
//   gradwatch::torchmon::Session gw(*model, optimizer, options);   // connects in the background
//   for (uint64_t step = 1; gw.BeginStep(step); ++step) {          // false once stopped
//     auto [x, y] = next_batch();
//     gw.DataReady();                                               // optional: splits the step time
//     optimizer.zero_grad();
//     auto loss = loss_fn(model->forward(x), y);
//     loss.backward();
//     gw.Scalar("data_time_ms", ...);                               // optional: any named scalar
//     if (gw.BeforeUpdate({step, epoch, loss.item<double>()})) optimizer.step();
//     gw.AfterUpdate();
//   }
//   gw.Finish();
//
// BeginStep applies every command received since the last step (clipping, learning-rate
// scale, skip, rollback, stop, mode) and acknowledges it with this step. BeforeUpdate
// measures the gradients (one fused norm, one copy) and the size of the
// update the optimizer proposes (||dw||/||w||, update_size.h: one more fused norm), reports
// the step (with its named scalars and the system metrics: the step's time by phase, the
// process's RSS and, on CUDA, the caching allocator's memory), in gated mode waits for the verdict (fail-open on timeout) and applies it (skip,
// clip, or this step's learning rate scaled down), and clips; it returns whether to apply
// the update. AfterUpdate restores a learning rate a verdict scaled and keeps a checkpoint
// every K healthy steps for rollback (and one of the initial state, step 0, from the start).
//
// Not thread-safe: call from the training thread. Without a monitor (empty address)
// everything but the reporting still works: clipping from the options, checkpoints.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "gradwatch/common/ewma.h"
#include "gradwatch/torch/types.h"

namespace torch {
namespace nn {
class Module;
}
namespace optim {
class Optimizer;
}
}  // namespace torch

namespace gradwatch::torchmon {

class MonitorLink;

struct SessionOptions {
  std::string monitor;                 // host:port of gradwatchd; "" = no monitor
  std::string run_id;
  Mode mode = Mode::kGuard;
  RunDescription run;                  // sent in the hello
  std::string device = "cpu";
  std::chrono::milliseconds gate_timeout{200};
  uint32_t checkpoint_every = 50;      // 0 = no checkpoints (rollback is then rejected)
  size_t checkpoints_kept = 4;         // in memory, newest last
  std::string checkpoint_dir;          // "" = memory only; else also written there, each file
                                       // replaced atomically; a failed write throws
                                       // std::runtime_error "checkpoint: cannot write PATH: ..."
                                       // from the constructor, BeginStep (a stop) or AfterUpdate
  std::string spool;                   // "" = none; else the reporter's spool file (reporter/spool.h)
  Clip clipping;                       // in force from the start
  bool log = true;                     // one stderr line per applied command
};

// What the loop measured on this step, besides the gradients.
struct StepInputs {
  uint64_t step = 0;
  uint32_t epoch = 0;
  double loss = 0;
  double jaccard_soft = 0, jaccard_hard = 0, accuracy = 0;
  // The batch's training items, if the loop knows them: reported (the first 64) so that a
  // "suspect data" event can name them. Not owned; read during BeforeUpdate only.
  const std::vector<int64_t>* sample_ids = nullptr;
};

struct AppliedCommand {
  std::string id, action, detail;
  uint64_t step = 0;
  bool applied = false;
};

class Session {
 public:
  Session(torch::nn::Module& model, torch::optim::Optimizer& optimizer, SessionOptions options);
  ~Session();

  // Parameter names in report order (the hello's layer names).
  const std::vector<std::string>& layer_names() const { return names_; }

  // Applies commands; returns false when a stop command was applied (end the loop).
  bool BeginStep(uint64_t step);
  // The base learning rate is multiplied by this before the step (1 unless scaled).
  double lr_scale() const { return lr_scale_; }
  // Sets the optimizer's learning rate for this step: base * lr_scale().
  void SetLearningRate(double base_lr);
  // Optional, after BeginStep: the batch is ready. The time before it is reported as the
  // step's data time, the time after it (to BeforeUpdate) as its compute time.
  void DataReady();
  // Optional, before BeforeUpdate: a named scalar of this step, reported with it (a repeated
  // name keeps the last value). The monitor refuses a report with more than 64 scalars or a
  // name outside [A-Za-z0-9_.:/-]{1,64}; see telemetry.proto.
  void Scalar(const std::string& name, double value);
  // After backward, before optimizer.step(): returns true to apply the update.
  bool BeforeUpdate(const StepInputs& in);
  // After the update (or its skip): checkpoints every K steps when the step was healthy.
  void AfterUpdate();
  void ReportEval(const EvalRecord& eval);
  // Waits (bounded) for the monitor to store everything, then closes the stream.
  void Finish(std::chrono::milliseconds deadline = std::chrono::seconds(10));

  const std::vector<AppliedCommand>& applied_commands() const { return applied_; }
  const Clip& clipping() const { return clipping_; }
  double last_grad_norm() const { return last_norm_; }
  // ||dw||/||w|| of the last proposed update (update_size.h); NaN when skipped or not measured.
  double last_update_ratio() const { return last_update_ratio_; }
  uint64_t updates_skipped() const { return skipped_; }
  // Gated verdicts that changed an update (skipped, clipped or ran it at a lower rate).
  uint64_t updates_vetoed() const { return vetoes_; }
  uint64_t gate_timeouts() const;
  // Why the monitor refused this run, "" when it guards it (or there is no monitor).
  // While it is set the loop is unguarded: say so on every line printed.
  std::string refused() const;
  bool monitored() const { return link_ != nullptr; }
  bool stopped() const { return stopped_; }

 private:
  struct Checkpoint {
    uint64_t step;          // state after this many updates
    std::string model, optimizer;  // serialized archives
  };
  void Apply(const Command& command, uint64_t step);
  std::string Rollback(uint64_t to_step, bool* ok);
  void SaveCheckpoint(uint64_t step);
  void ClipGradients(double total_norm);
  void ApplyVerdict(const Verdict& verdict, bool* update, Clip* applied);
  double AdaptiveThreshold() const;
  SystemSample MeasureSystem(std::chrono::steady_clock::time_point entered) const;

  torch::nn::Module& model_;
  torch::optim::Optimizer& optimizer_;
  SessionOptions options_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;  // in names_ order
  std::unique_ptr<MonitorLink> link_;
  Clip clipping_;
  double lr_scale_ = 1.0;
  double lr_ = 0;
  uint32_t skip_pending_ = 0;
  uint64_t step_ = 0;
  uint64_t rolled_back_to_ = 0;
  bool rolled_back_ = false;
  std::vector<double> saved_lrs_;  // per parameter group, while a verdict scaled them
  uint64_t vetoes_ = 0;
  bool stop_requested_ = false;
  bool stopped_ = false;
  bool step_healthy_ = true;
  double last_norm_ = 0;
  double last_update_ratio_ = NAN;
  uint64_t skipped_ = 0;
  // Healthy grad-norm statistics for adaptive clipping: the log norm's EWMA (ZClip's alpha 0.97),
  // seeded from the plain mean and variance of the first 25 finite steps.
  Ewma log_norm_{0.97, 0.97, 25};
  std::chrono::steady_clock::time_point step_start_;
  std::chrono::steady_clock::time_point data_ready_;  // == step_start_ until DataReady
  bool data_marked_ = false;
  double begin_seconds_ = 0;                          // BeginStep's own work on this step
  std::map<std::string, double> scalars_;             // this step's, until reported
  std::deque<Checkpoint> checkpoints_;
  std::vector<AppliedCommand> applied_;
};

}  // namespace gradwatch::torchmon
