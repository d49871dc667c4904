// Plain values exchanged between a training loop and the monitor link. No torch and no
// protobuf here, on purpose: a LibTorch from pip ships its own protobuf headers, so a
// translation unit must never include both torch and the generated messages.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gradwatch::torchmon {

enum class Mode { kObserve, kGuard, kGated };

// Where the training thread is in a step, for heartbeats (telemetry.proto's Heartbeat.Phase).
enum class Phase {
  kNone,        // not in a step: no heartbeats
  kCompute,     // data, forward, backward, update: the rank's own work
  kCollective,  // inside an all-reduce or broadcast, waiting for the other ranks
  kVerdict,     // gated mode: waiting for the monitor's verdict
};

struct Clip {
  enum class Kind { kOff, kNorm, kValue, kAdaptive };
  Kind kind = Kind::kOff;
  double threshold = 0;  // max global norm (kNorm, kAdaptive) or max |value| (kValue)
};

// What the hello tells the monitor about the run.
struct RunDescription {
  std::string model, optimizer, loss;
  double learning_rate = 0;
  double loss_upper_bound = 0;  // 0 = unbounded; 1 for the Jaccard loss
  uint32_t batch_size = 0, eval_every = 0, checkpoint_every = 0;
  uint64_t total_steps = 0;
  std::map<std::string, std::string> labels;
  // Detector overrides by name, e.g. {"scalar_min.output_mean", 0.05} (server/detect/thresholds.h).
  std::map<std::string, double> thresholds;
};

// Where one step's time and memory went, as the trainer measured them; NaN or -1 = not
// measured (the CUDA fields stay -1 on CPU).
struct SystemSample {
  double data_seconds = NAN;     // BeginStep to DataReady: the batch
  double compute_seconds = NAN;  // DataReady (else BeginStep) to BeforeUpdate: forward, loss, backward
  double report_seconds = NAN;   // gradwatch's own work before the report: commands, gradient statistics
  int64_t resident_bytes = -1;   // process RSS
  int64_t cuda_allocated_bytes = -1, cuda_reserved_bytes = -1, cuda_peak_allocated_bytes = -1;
  double device_utilization = NAN;  // CUDA: share of NVML's last sample period a kernel ran, 0..1
};

// One step as reported; NaN in a metric means "not reported".
struct StepRecord {
  uint64_t step = 0;
  uint32_t epoch = 0;
  double loss = 0, learning_rate = 0, grad_norm = 0;
  std::vector<float> layer_norms;
  double jaccard_soft = NAN, jaccard_hard = NAN, accuracy = NAN;
  Clip clip;
  double step_seconds = 0;
  int64_t unix_millis = 0;
  bool update_skipped = false;
  uint64_t rolled_back_to = 0;
  bool rolled_back = false;  // the first step after a rollback (rolled_back_to may be 0)
  bool awaiting_verdict = false;
  double update_ratio = NAN;  // ||dw|| / ||w|| of the proposed update; NaN = not measured
  std::vector<uint64_t> sample_ids;  // the batch's training items, when known (at most 64)
  std::map<std::string, double> scalars;  // named user scalars of this step
  SystemSample system;
  // Data parallel: this rank's gradient norm before the all-reduce (NaN = one process), and on
  // rank 0 every rank's loss, local norm and compute seconds, indexed by rank (else empty).
  double local_grad_norm = NAN;
  std::vector<double> rank_losses, rank_grad_norms, rank_compute_seconds;
};

struct EvalRecord {
  uint64_t step = 0;
  double loss = 0, jaccard_soft = NAN, jaccard_hard = NAN, accuracy = NAN;
};

struct Command {
  enum class Action { kNone, kClip, kScaleLr, kSkip, kRollback, kStop, kMode };
  std::string id, issued_by, reason;
  Action action = Action::kNone;
  Clip clip;                 // kClip
  double lr_scale = 1;       // kScaleLr
  uint32_t skip_count = 1;   // kSkip
  uint64_t rollback_to = 0;  // kRollback: 0 = the newest checkpoint
  Mode mode = Mode::kGuard;  // kMode
};

struct CommandAck {
  std::string command_id;
  uint64_t applied_at_step = 0;
  bool applied = false;
  std::string detail;
};

struct Verdict {
  enum class Decision { kProceed, kSkip, kClip, kScaleLr };
  Decision decision = Decision::kProceed;
  double clip_norm = 0;  // kClip
  double lr_scale = 1;   // kScaleLr: this step's learning rate x lr_scale, in (0, 1]
  std::string reason;
};

const char* ActionName(Command::Action action);  // "set_clipping", "scale_learning_rate", ...

}  // namespace gradwatch::torchmon
