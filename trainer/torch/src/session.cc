#include "gradwatch/torch/session.h"

#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "gradwatch/reporter/reporter.h"
#include "gradwatch/torch/grad_stats.h"

namespace gradwatch::torchmon {
namespace {

constexpr double kAlpha = 0.97;     // EWMA of healthy log grad norm (ZClip's)
constexpr uint64_t kWarmup = 25;
constexpr double kSpikeZ = 3.0;     // above this a step is not healthy for statistics or checkpoints

std::string Serialize(const std::function<void(torch::serialize::OutputArchive&)>& save) {
  torch::serialize::OutputArchive archive;
  save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

const char* ActionOf(const v1::Command& c) {
  switch (c.action_case()) {
    case v1::Command::kSetClipping: return "set_clipping";
    case v1::Command::kScaleLearningRate: return "scale_learning_rate";
    case v1::Command::kSkipStep: return "skip_step";
    case v1::Command::kRollback: return "rollback";
    case v1::Command::kStop: return "stop";
    case v1::Command::kSetMode: return "set_mode";
    default: return "none";
  }
}

std::string Describe(const v1::Clipping& c) {
  std::ostringstream s;
  switch (c.kind()) {
    case v1::Clipping::KIND_OFF: return "clipping off";
    case v1::Clipping::KIND_NORM: s << "clip global norm at " << c.threshold(); break;
    case v1::Clipping::KIND_VALUE: s << "clip values at " << c.threshold(); break;
    case v1::Clipping::KIND_ADAPTIVE: s << "adaptive norm clipping at " << c.threshold(); break;
    default: return "clipping ?";
  }
  return s.str();
}

}  // namespace

Session::Session(torch::nn::Module& model, torch::optim::Optimizer& optimizer, SessionOptions options)
    : model_(model), optimizer_(optimizer), options_(std::move(options)), clipping_(options_.clipping) {
  for (const auto& p : model_.named_parameters()) names_.push_back(p.key());
  if (!options_.monitor.empty()) {
    v1::Hello hello;
    hello.set_run_id(options_.run_id);
    for (const auto& n : names_) hello.add_layer_names(n);
    *hello.mutable_config() = options_.config;
    hello.set_mode(options_.mode);
    hello.set_trainer_version("gradwatch-train 0.1.0");
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    hello.set_host(host);
    hello.set_device(options_.device);
    reporter::ReporterOptions ro;
    ro.address = options_.monitor;
    reporter_ = std::make_unique<reporter::Reporter>(ro, hello);
  }
  if (!options_.checkpoint_dir.empty()) std::filesystem::create_directories(options_.checkpoint_dir);
  if (options_.checkpoint_every > 0) SaveCheckpoint(0);  // the initial state is healthy by definition
}

Session::~Session() = default;

uint64_t Session::gate_timeouts() const { return reporter_ ? reporter_->stats().gate_timeouts : 0; }

bool Session::BeginStep(uint64_t step) {
  step_ = step;
  step_start_ = std::chrono::steady_clock::now();
  if (reporter_) {
    for (const auto& command : reporter_->TakeCommands()) Apply(command, step);
  }
  if (stop_requested_) stopped_ = true;
  return !stopped_;
}

void Session::SetLearningRate(double base_lr) {
  lr_ = base_lr * lr_scale_;
  for (auto& group : optimizer_.param_groups()) group.options().set_lr(lr_);
}

void Session::Apply(const v1::Command& command, uint64_t step) {
  bool ok = true;
  std::ostringstream detail;
  switch (command.action_case()) {
    case v1::Command::kSetClipping:
      clipping_ = command.set_clipping();
      if (clipping_.kind() == v1::Clipping::KIND_ADAPTIVE && clipping_.threshold() <= 0) {
        clipping_.set_threshold(AdaptiveThreshold());
      }
      detail << Describe(clipping_);
      break;
    case v1::Command::kScaleLearningRate:
      lr_scale_ *= command.scale_learning_rate();
      detail << "learning rate x" << command.scale_learning_rate() << " (scale now " << lr_scale_ << ")";
      break;
    case v1::Command::kSkipStep:
      skip_pending_ += std::max<uint32_t>(1, command.skip_step().count());
      detail << "skipping " << skip_pending_ << " update(s)";
      break;
    case v1::Command::kRollback: detail << Rollback(command.rollback().to_step(), &ok); break;
    case v1::Command::kStop:
      if (options_.checkpoint_every > 0 || !options_.checkpoint_dir.empty()) SaveCheckpoint(step - 1);
      stop_requested_ = true;
      detail << "stopping before step " << step;
      break;
    case v1::Command::kSetMode:
      options_.mode = command.set_mode();
      detail << "mode " << v1::Mode_Name(command.set_mode());
      break;
    default:
      ok = false;
      detail << "unknown action";
  }
  v1::CommandAck ack;
  ack.set_command_id(command.id());
  ack.set_applied_at_step(step);
  ack.set_result(ok ? v1::CommandAck::RESULT_APPLIED : v1::CommandAck::RESULT_REJECTED);
  ack.set_detail(detail.str());
  reporter_->AckCommand(ack);
  applied_.push_back({command.id(), ActionOf(command), detail.str(), step, ok});
  if (options_.log) {
    std::cerr << "gradwatch: step " << step << ": " << (ok ? "applied " : "rejected ") << command.id()
              << " (" << command.issued_by() << "): " << detail.str() << " — " << command.reason()
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
    auto base = std::filesystem::path(options_.checkpoint_dir) / ("step-" + std::to_string(step));
    std::ofstream(base.string() + ".model.pt", std::ios::binary) << c.model;
    std::ofstream(base.string() + ".optim.pt", std::ios::binary) << c.optimizer;
  }
  checkpoints_.push_back(std::move(c));
  while (checkpoints_.size() > std::max<size_t>(options_.checkpoints_kept, 1)) checkpoints_.pop_front();
}

double Session::AdaptiveThreshold() const {
  if (healthy_ < kWarmup) return 1.0;  // no statistics yet: the case's accepted fix
  return std::exp(log_mean_ + 3.0 * std::sqrt(log_var_));
}

void Session::ClipGradients(double total_norm) {
  std::vector<torch::Tensor> grads;
  for (auto& p : model_.parameters()) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (clipping_.kind() == v1::Clipping::KIND_VALUE) {
    for (auto& g : grads) g.clamp_(-clipping_.threshold(), clipping_.threshold());
    return;
  }
  double coef = clipping_.threshold() / (total_norm + 1e-6);
  if (coef < 1.0) torch::_foreach_mul_(grads, coef);  // NaN total: no clip, coef < 1 is false
}

bool Session::BeforeUpdate(const StepInputs& in) {
  std::vector<torch::Tensor> params;
  for (const auto& p : model_.named_parameters()) params.push_back(p.value());
  GradStats stats = ComputeGradStats(params);
  last_norm_ = stats.global_norm;

  // Healthy statistics (for adaptive clipping and for deciding what to checkpoint).
  double log_norm = std::log(std::max(stats.global_norm, 1e-30));
  double z = healthy_ >= kWarmup ? (log_norm - log_mean_) / std::sqrt(log_var_ + 1e-12) : 0.0;
  bool finite = std::isfinite(stats.global_norm) && std::isfinite(in.loss);
  step_healthy_ = finite && z < kSpikeZ;
  if (finite) {
    // As ZClip does: a spike enters the statistics clamped to the threshold, so a
    // slow drift of the norm is followed while one outlier barely moves them.
    if (healthy_ >= kWarmup && z > kSpikeZ) log_norm = log_mean_ + kSpikeZ * std::sqrt(log_var_);
    if (healthy_ == 0) log_mean_ = log_norm;
    double d = log_norm - log_mean_;
    log_mean_ += (1 - kAlpha) * d;
    log_var_ = kAlpha * (log_var_ + (1 - kAlpha) * d * d);
    ++healthy_;
  }

  bool update = true;
  v1::Clipping applied = clipping_;
  if (skip_pending_ > 0) {
    --skip_pending_;
    update = false;
  }
  if (reporter_) {
    v1::StepReport r;
    r.set_step(in.step);
    r.set_epoch(in.epoch);
    r.set_loss(in.loss);
    r.set_learning_rate(lr_);
    r.set_grad_norm(stats.global_norm);
    r.mutable_layer_grad_norms()->Add(stats.layer_norms.begin(), stats.layer_norms.end());
    r.set_jaccard_soft(in.jaccard_soft);
    r.set_jaccard_hard(in.jaccard_hard);
    r.set_accuracy(in.accuracy);
    *r.mutable_clipping() = clipping_;
    r.set_step_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start_).count());
    r.set_unix_millis(std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count());
    r.set_update_skipped(!update);
    r.set_rolled_back_to(rolled_back_to_);
    rolled_back_to_ = 0;
    bool gated = options_.mode == v1::MODE_GATED && update;
    r.set_awaiting_verdict(gated);
    reporter_->Report(r);
    if (gated) {
      auto verdict = reporter_->AwaitVerdict(in.step, options_.gate_timeout);
      if (verdict && verdict->decision() == v1::Verdict::DECISION_SKIP) update = false;
      if (verdict && verdict->decision() == v1::Verdict::DECISION_CLIP) {
        applied.set_kind(v1::Clipping::KIND_NORM);
        applied.set_threshold(verdict->clip_norm());
      }
    }
  }
  if (update && applied.kind() != v1::Clipping::KIND_OFF && applied.threshold() > 0) {
    v1::Clipping saved = clipping_;
    clipping_ = applied;
    ClipGradients(stats.global_norm);
    clipping_ = saved;
  }
  if (!update) ++skipped_;
  return update;
}

void Session::AfterUpdate() {
  if (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0 && step_healthy_) {
    SaveCheckpoint(step_);
  }
}

void Session::ReportEval(const v1::EvalReport& eval) {
  if (reporter_) reporter_->Report(eval);
}

void Session::Finish(std::chrono::milliseconds deadline) {
  if (!reporter_) return;
  reporter_->Close(deadline);
  auto s = reporter_->stats();
  if (s.acked_through < step_ && options_.log) {
    std::cerr << "gradwatch: the monitor stored steps up to " << s.acked_through << " of " << step_
              << " (" << s.dropped << " reports dropped)" << std::endl;
  }
}

}  // namespace gradwatch::torchmon
