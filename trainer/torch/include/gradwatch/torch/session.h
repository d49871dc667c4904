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
// Data parallel (SessionOptions.group of more than one rank; group.h). Every rank runs this
// loop on its own shard with its own Session; the Session is what keeps them one job:
// - The constructor broadcasts rank 0's parameters and buffers, so the ranks start equal.
// - BeforeUpdate averages the gradients itself with ONE all-reduce (SUM) of one flat buffer:
//   the gradients, then 3 x world_size slots where each rank writes its loss, its local
//   gradient norm (one norm kernel on the device, no host sync) and its compute seconds at its
//   own index, zeros elsewhere, then two control slots: "rank 0 holds commands" and "a rank
//   asks to stop" (RequestStop, e.g. on SIGTERM). After it every rank holds every rank's
//   values and divides the gradients by world_size; the per-layer and global norms are then
//   the averaged gradient's, the same on every rank, and come to the host with the slots in
//   one copy. Each rank reports on its own stream (same run id, Hello.rank and world_size):
//   grad_norm the global norm, local_grad_norm its own, loss its own; rank 0 adds every
//   rank's losses, local norms and compute seconds.
// - Every decision that changes the parameters uses values identical on every rank: the
//   healthy statistics (adaptive clipping, which steps keep a checkpoint) come from the global
//   norm and the mean loss, so every rank keeps checkpoints at the same steps; clipping uses
//   the global norm.
// - Commands are agreed: the monitor sends them (and verdicts) to rank 0 only; other ranks'
//   reporters drop any that reach them. When the all-reduce says rank 0 holds commands, the
//   next BeginStep has rank 0 take them, resolve a rollback to "the newest checkpoint" into
//   that checkpoint's step, and broadcast them as v1::Command bytes (link.h EncodeCommands);
//   every rank applies the same commands in the same order at that step and acknowledges each
//   on its own stream with that applied_at_step. Cost: nothing on a step without commands (the
//   flag rides in the gradient all-reduce: one more float); on a step with some, two small
//   broadcasts (the length, then the bytes). Measured by bench/trainer_overhead on this 2-core
//   machine (2-rank Gloo, loopback, shared with other work): a length-only broadcast, what a
//   fixed header every step would have cost, 90-160 us a step; a command's two broadcasts
//   350 us, once per command step; the U-Net's gradient all-reduce itself 0.7 ms. A command
//   that reaches rank 0 during step s
//   before its all-reduce is applied at s + 1, as with one process; one that arrives after it
//   waits one step more. Rank 0 alone does not apply a command before the others: a rank that
//   did would no longer hold the same parameters.
// - Gated mode: only rank 0's report awaits a verdict; rank 0 waits for it (gate_timeout,
//   fail-open) and broadcasts the decision (decision, clip norm, learning-rate scale: three
//   float64) to every rank, which all apply it. Other ranks never wait on the monitor. This
//   broadcast is the one extra collective per gated step.
// - A monitor stream that is down changes nothing in the job's consistency: rank 0's fallback
//   (no commands, proceed on the verdict timeout) is what it broadcasts; another rank's stream
//   only ever carries that rank's reports and acks, which its reporter keeps and resends.
// - A stop (command or RequestStop on any rank) ends every rank at the same BeginStep.
// - Heartbeats: the Session names its phase to the reporter (compute from BeginStep,
//   collective around each all-reduce and broadcast, verdict while awaiting one); a rank that
//   hangs in its own work shows as compute while the others show as collective.
// Collectives block; one whose peer died or that passes GroupOptions.timeout throws, and the
// trainer ends: a job whose ranks disagree on a step cannot go on.
//
// Not thread-safe: call from the training thread. Without a monitor (empty address)
// everything but the reporting still works: clipping from the options, checkpoints.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
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
class Group;
class DeviceUtilization;
struct GradStats;

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
  // Data parallel: the job's ranks (group.h); null or one rank = a single process. With more,
  // only rank 0 writes checkpoint_dir (every rank holds the same parameters); the others
  // keep their checkpoints in memory. spool must differ per rank.
  std::shared_ptr<Group> group;
  std::chrono::milliseconds heartbeat_interval{1'000};  // see reporter.h
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

  // Applies commands; returns false when a stop command was applied or a stop was requested
  // (end the loop).
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
  // Reported by rank 0 only in a data-parallel job: the ranks' parameters are the same.
  // Throws std::invalid_argument for a step not reported yet (0, or past the last
  // BeforeUpdate): the monitor refuses an eval ahead of its step's report; and for a step
  // before the last eval's (evals are acknowledged in step order).
  void ReportEval(const EvalRecord& eval);
  // Waits (bounded) for the monitor to store everything, then closes the stream.
  void Finish(std::chrono::milliseconds deadline = std::chrono::seconds(10));

  // A command as if the monitor had sent it, applied at the next step boundary the way the
  // monitor's are (acknowledged to the monitor when there is one). Data parallel: rank 0's
  // only, handed to every rank like the monitor's; ignored on other ranks.
  void QueueCommand(const Command& command);
  // Ends the loop at a step boundary, as after a stop command, without one (a signal): the
  // next BeginStep returns false; data parallel, every rank's BeginStep after the next
  // all-reduce, whichever rank asked.
  void RequestStop() { stop_wanted_ = true; }
  bool stopped_by_command() const { return stopped_by_command_; }

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  // The last step's loss for the run: the mean over the ranks (the same on every rank), else
  // the loss given to BeforeUpdate.
  double last_loss() const { return last_loss_; }
  // This rank's gradient norm before the all-reduce (the global norm with one process).
  double last_local_grad_norm() const { return last_local_norm_; }
  // Data parallel: every rank's loss and local gradient norm on the last step, by rank (as
  // gathered with the all-reduce, in the gradients' dtype); empty with one process.
  const std::vector<double>& last_rank_losses() const { return rank_losses_; }
  const std::vector<double>& last_rank_grad_norms() const { return rank_norms_; }

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
  std::vector<Command> TakeCommands();
  void AverageGradients(const StepInputs& in, std::chrono::steady_clock::time_point entered, GradStats* stats);
  bool AgreeOnVerdict(std::optional<Verdict>* verdict);
  void SetPhase(uint64_t step, Phase phase);
  std::string Rollback(uint64_t to_step, bool* ok);
  void SaveCheckpoint(uint64_t step);
  void ClipGradients(double total_norm);
  void ApplyVerdict(const Verdict& verdict, bool* update, Clip* applied);
  double AdaptiveThreshold() const;
  SystemSample MeasureSystem(std::chrono::steady_clock::time_point entered);

  torch::nn::Module& model_;
  torch::optim::Optimizer& optimizer_;
  SessionOptions options_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;  // in names_ order
  std::unique_ptr<MonitorLink> link_;
  std::unique_ptr<DeviceUtilization> utilization_;  // on a CUDA device with NVML; else null
  Clip clipping_;
  double lr_scale_ = 1.0;
  double lr_ = 0;
  uint32_t skip_pending_ = 0;
  uint64_t step_ = 0;
  uint64_t reported_step_ = 0;  // the last step BeforeUpdate measured
  uint64_t last_eval_step_ = 0;
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
  std::vector<Command> queued_;  // QueueCommand's, taken with the monitor's

  bool stop_wanted_ = false;        // RequestStop
  bool stopped_by_command_ = false;
  double last_loss_ = NAN;
  double last_local_norm_ = NAN;
  std::vector<double> rank_losses_, rank_norms_, rank_compute_;  // the last step's, by rank

  // Data parallel.
  std::shared_ptr<Group> group_;
  int rank_ = 0, world_ = 1;
  at::Tensor flat_;                 // the gradients and the slots, all-reduced once a step
  int64_t grad_numel_ = 0;          // gradient values at the front of flat_
  bool commands_waiting_ = false;   // the last all-reduce said rank 0 holds commands
  bool stop_agreed_ = false;        // the last all-reduce said a rank asked to stop
};

}  // namespace gradwatch::torchmon
