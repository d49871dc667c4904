#include "gradwatch/torch/session.h"

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "gradwatch/common/file.h"
#include "gradwatch/torch/grad_stats.h"
#include "gradwatch/torch/link.h"
#include "gradwatch/torch/update_size.h"
#include "system_stats.h"

namespace gradwatch::torchmon {
namespace {

constexpr double kSpikeZ = 3.0;      // above this a step is not healthy for statistics or checkpoints
constexpr double kLogStdFloor = 1e-6;  // a constant norm must not make every change a spike

std::string Serialize(const std::function<void(torch::serialize::OutputArchive&)>& save) {
  torch::serialize::OutputArchive archive;
  save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

std::string Describe(const Clip& c) {
  std::ostringstream s;
  switch (c.kind) {
    case Clip::Kind::kOff: return "clipping off";
    case Clip::Kind::kNorm: s << "clip global norm at " << c.threshold; break;
    case Clip::Kind::kValue: s << "clip values at " << c.threshold; break;
    case Clip::Kind::kAdaptive: s << "adaptive norm clipping at " << c.threshold; break;
  }
  return s.str();
}

const char* ModeName(Mode m) {
  return m == Mode::kObserve ? "observe" : m == Mode::kGated ? "gated" : "guard";
}

}  // namespace

Session::Session(torch::nn::Module& model, torch::optim::Optimizer& optimizer, SessionOptions options)
    : model_(model), optimizer_(optimizer), options_(std::move(options)), clipping_(options_.clipping) {
  for (const auto& p : model_.named_parameters()) {
    names_.push_back(p.key());
    params_.push_back(p.value());  // handles: a rollback loads into the same tensors
  }
  if (!options_.monitor.empty()) {
    LinkOptions lo;
    lo.address = options_.monitor;
    lo.run_id = options_.run_id;
    lo.layer_names = names_;
    lo.run = options_.run;
    lo.mode = options_.mode;
    lo.device = options_.device;
    lo.spool = options_.spool;
    link_ = std::make_unique<MonitorLink>(lo);
  }
  if (!options_.checkpoint_dir.empty()) std::filesystem::create_directories(options_.checkpoint_dir);
  if (options_.checkpoint_every > 0) SaveCheckpoint(0);  // the initial state is healthy by definition
}

Session::~Session() = default;

uint64_t Session::gate_timeouts() const { return link_ ? link_->stats().gate_timeouts : 0; }
std::string Session::refused() const { return link_ ? link_->stats().refused : std::string(); }

bool Session::BeginStep(uint64_t step) {
  step_ = step;
  const auto start = std::chrono::steady_clock::now();
  if (link_) {
    for (const auto& command : link_->TakeCommands()) Apply(command, step);
  }
  if (stop_requested_) stopped_ = true;
  step_start_ = data_ready_ = std::chrono::steady_clock::now();
  begin_seconds_ = std::chrono::duration<double>(step_start_ - start).count();
  data_marked_ = false;
  scalars_.clear();
  return !stopped_;
}

void Session::DataReady() {
  data_ready_ = std::chrono::steady_clock::now();
  data_marked_ = true;
}

void Session::Scalar(const std::string& name, double value) { scalars_[name] = value; }

// The step's time by phase and the process's memory; `entered` is when BeforeUpdate began.
SystemSample Session::MeasureSystem(std::chrono::steady_clock::time_point entered) const {
  using Seconds = std::chrono::duration<double>;
  const auto now = std::chrono::steady_clock::now();
  SystemSample s;
  if (data_marked_) s.data_seconds = Seconds(data_ready_ - step_start_).count();
  s.compute_seconds = Seconds(entered - data_ready_).count();
  s.report_seconds = begin_seconds_ + Seconds(now - entered).count();
  s.resident_bytes = ResidentBytes();
  CudaMemory(options_.device, &s);
  return s;
}

void Session::SetLearningRate(double base_lr) {
  lr_ = base_lr * lr_scale_;
  for (auto& group : optimizer_.param_groups()) group.options().set_lr(lr_);
}

void Session::Apply(const Command& command, uint64_t step) {
  bool ok = true;
  std::ostringstream detail;
  switch (command.action) {
    case Command::Action::kClip:
      clipping_ = command.clip;
      if (clipping_.kind == Clip::Kind::kAdaptive && clipping_.threshold <= 0) {
        clipping_.threshold = AdaptiveThreshold();
      }
      detail << Describe(clipping_);
      break;
    case Command::Action::kScaleLr:
      lr_scale_ *= command.lr_scale;
      detail << "learning rate x" << command.lr_scale << " (scale now " << lr_scale_ << ")";
      break;
    case Command::Action::kSkip:
      skip_pending_ += std::max<uint32_t>(1, command.skip_count);
      detail << "skipping " << skip_pending_ << " update(s)";
      break;
    case Command::Action::kRollback: detail << Rollback(command.rollback_to, &ok); break;
    case Command::Action::kStop:
      if (options_.checkpoint_every > 0 || !options_.checkpoint_dir.empty()) SaveCheckpoint(step - 1);
      stop_requested_ = true;
      detail << "stopping before step " << step;
      break;
    case Command::Action::kMode:
      options_.mode = command.mode;
      detail << "mode " << ModeName(command.mode);
      break;
    default:
      ok = false;
      detail << "unknown action";
  }
  link_->Ack({command.id, step, ok, detail.str()});
  applied_.push_back({command.id, ActionName(command.action), detail.str(), step, ok});
  if (options_.log) {
    std::cerr << "gradwatch: step " << step << ": " << (ok ? "applied " : "rejected ") << command.id
              << " (" << command.issued_by << "): " << detail.str() << " — " << command.reason
              << std::endl;
  }
}

std::string Session::Rollback(uint64_t to_step, bool* ok) {
  // The newest checkpoint at or before to_step (0 = the newest of all).
  for (auto it = checkpoints_.rbegin(); it != checkpoints_.rend(); ++it) {
    if (to_step != 0 && it->step > to_step) continue;
    torch::serialize::InputArchive model_in, opt_in;
    std::istringstream m(it->model), o(it->optimizer);
    model_in.load_from(m);
    opt_in.load_from(o);
    model_.load(model_in);
    // Loading does not remove state the checkpoint lacks: clear it first, or momentum
    // built from the bad steps would carry on after the rollback.
    optimizer_.state().clear();
    optimizer_.load(opt_in);
    rolled_back_to_ = it->step;
    rolled_back_ = true;
    // Later checkpoints belong to the abandoned trajectory.
    checkpoints_.erase(it.base(), checkpoints_.end());
    *ok = true;
    return "restored the checkpoint of step " + std::to_string(rolled_back_to_);
  }
  *ok = false;
  return to_step ? "no checkpoint at or before step " + std::to_string(to_step) : "no checkpoint yet";
}

void Session::SaveCheckpoint(uint64_t step) {
  Checkpoint c;
  c.step = step;
  c.model = Serialize([&](auto& a) { model_.save(a); });
  c.optimizer = Serialize([&](auto& a) { optimizer_.save(a); });
  if (!options_.checkpoint_dir.empty()) {
    // Each file is replaced atomically and fsynced (common/file.h): a failed write ends the
    // run with the path and the reason rather than leaving a truncated checkpoint to load.
    auto base = std::filesystem::path(options_.checkpoint_dir) / ("step-" + std::to_string(step));
    try {
      WriteFileAtomically(base.string() + ".model.pt", c.model);
      WriteFileAtomically(base.string() + ".optim.pt", c.optimizer);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("checkpoint: ") + e.what());
    }
  }
  checkpoints_.push_back(std::move(c));
  while (checkpoints_.size() > std::max<size_t>(options_.checkpoints_kept, 1)) checkpoints_.pop_front();
}

double Session::AdaptiveThreshold() const {
  if (!log_norm_.ready()) return 1.0;  // no statistics yet: the case's accepted fix
  return std::exp(log_norm_.At(3.0, kLogStdFloor));
}

void Session::ClipGradients(double total_norm) {
  std::vector<torch::Tensor> grads;
  for (auto& p : params_) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (clipping_.kind == Clip::Kind::kValue) {
    for (auto& g : grads) g.clamp_(-clipping_.threshold, clipping_.threshold);
    return;
  }
  double coef = clipping_.threshold / (total_norm + 1e-6);
  if (coef < 1.0) torch::_foreach_mul_(grads, coef);  // NaN total: no clip, coef < 1 is false
}

bool Session::BeforeUpdate(const StepInputs& in) {
  const auto entered = std::chrono::steady_clock::now();
  GradStats stats = ComputeGradStats(params_);
  last_norm_ = stats.global_norm;

  // Healthy statistics (for adaptive clipping and for deciding what to checkpoint).
  double log_norm = std::log(std::max(stats.global_norm, 1e-30));
  double z = log_norm_.Z(log_norm, kLogStdFloor);  // 0 during the warm-up
  bool finite = std::isfinite(stats.global_norm) && std::isfinite(in.loss);
  step_healthy_ = finite && z < kSpikeZ;
  if (finite) {
    // As ZClip does: a spike enters the statistics clamped to the threshold, so a
    // slow drift of the norm is followed while one outlier barely moves them.
    log_norm_.Add(z > kSpikeZ ? log_norm_.At(kSpikeZ, kLogStdFloor) : log_norm);
  }

  bool update = true;
  Clip applied = clipping_;
  if (skip_pending_ > 0) {
    --skip_pending_;
    update = false;
  }
  // Before clipping and before any verdict: the update as the optimizer proposes it.
  last_update_ratio_ = update ? PredictUpdate(optimizer_).ratio : NAN;
  if (link_) {
    StepRecord r;
    r.step = in.step;
    r.epoch = in.epoch;
    r.loss = in.loss;
    r.learning_rate = lr_;
    r.grad_norm = stats.global_norm;
    r.layer_norms = std::move(stats.layer_norms);
    r.jaccard_soft = in.jaccard_soft;
    r.jaccard_hard = in.jaccard_hard;
    r.accuracy = in.accuracy;
    r.clip = clipping_;
    r.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start_).count();
    r.unix_millis = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch()).count();
    r.update_skipped = !update;
    r.rolled_back_to = rolled_back_to_;
    r.rolled_back = rolled_back_;
    rolled_back_to_ = 0;
    rolled_back_ = false;
    r.update_ratio = last_update_ratio_;
    if (in.sample_ids) {
      const size_t n = std::min<size_t>(in.sample_ids->size(), 64);
      r.sample_ids.assign(in.sample_ids->begin(), in.sample_ids->begin() + static_cast<std::ptrdiff_t>(n));
    }
    r.awaiting_verdict = options_.mode == Mode::kGated && update;
    r.scalars = std::move(scalars_);
    scalars_.clear();
    r.system = MeasureSystem(entered);
    link_->Report(r);
    if (r.awaiting_verdict) {
      if (auto verdict = link_->AwaitVerdict(in.step, options_.gate_timeout)) ApplyVerdict(*verdict, &update, &applied);
    }
  }
  if (update && applied.kind != Clip::Kind::kOff && applied.threshold > 0) {
    Clip saved = clipping_;
    clipping_ = applied;
    ClipGradients(stats.global_norm);
    clipping_ = saved;
  }
  if (!update) ++skipped_;
  return update;
}

// A verdict other than proceed is a veto of the update as proposed.
void Session::ApplyVerdict(const Verdict& verdict, bool* update, Clip* applied) {
  switch (verdict.decision) {
    case Verdict::Decision::kProceed: return;
    case Verdict::Decision::kSkip: *update = false; break;
    case Verdict::Decision::kClip:
      applied->kind = Clip::Kind::kNorm;
      applied->threshold = verdict.clip_norm;
      break;
    case Verdict::Decision::kScaleLr:
      // This step only: AfterUpdate puts the rate back.
      for (auto& group : optimizer_.param_groups()) {
        saved_lrs_.push_back(group.options().get_lr());
        group.options().set_lr(group.options().get_lr() * verdict.lr_scale);
      }
      break;
  }
  ++vetoes_;
  if (options_.log) std::cerr << "gradwatch: step " << step_ << ": veto: " << verdict.reason << std::endl;
}

void Session::AfterUpdate() {
  if (!saved_lrs_.empty()) {
    auto& groups = optimizer_.param_groups();
    for (size_t i = 0; i < groups.size() && i < saved_lrs_.size(); ++i) groups[i].options().set_lr(saved_lrs_[i]);
    saved_lrs_.clear();
  }
  if (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0 && step_healthy_) {
    SaveCheckpoint(step_);
  }
}

void Session::ReportEval(const EvalRecord& eval) {
  if (link_) link_->Report(eval);
}

void Session::Finish(std::chrono::milliseconds deadline) {
  if (!link_) return;
  // With no monitor up, waiting the whole deadline would only delay the end of training.
  if (!link_->stats().connected) deadline = std::min(deadline, std::chrono::milliseconds(1000));
  link_->Close(deadline);
  auto s = link_->stats();
  if (s.acked_through < step_ && options_.log) {
    std::cerr << "gradwatch: the monitor stored steps up to " << s.acked_through << " of " << step_ << " ("
              << step_ - s.acked_through << " not delivered, " << s.dropped << " dropped from a full buffer)"
              << std::endl;
  }
}

}  // namespace gradwatch::torchmon
