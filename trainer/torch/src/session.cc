#include "gradwatch/common/log_line.h"
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
#include "gradwatch/torch/device_utilization.h"
#include "gradwatch/torch/grad_stats.h"
#include "gradwatch/torch/group.h"
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

// The all-reduce buffer after the gradients (see session.h): world_size values each of the
// ranks' losses, local norms and compute seconds, then the two control flags.
struct Slots {
  int64_t world;
  int64_t loss(int64_t r) const { return r; }
  int64_t norm(int64_t r) const { return world + r; }
  int64_t compute(int64_t r) const { return 2 * world + r; }
  int64_t commands() const { return 3 * world; }
  int64_t stop() const { return 3 * world + 1; }
  int64_t size() const { return 3 * world + 2; }
};

}  // namespace

Session::Session(torch::nn::Module& model, torch::optim::Optimizer& optimizer, SessionOptions options)
    : model_(model), optimizer_(optimizer), options_(std::move(options)), clipping_(options_.clipping) {
  for (const auto& p : model_.named_parameters()) {
    names_.push_back(p.key());
    params_.push_back(p.value());  // handles: a rollback loads into the same tensors
  }
  group_ = options_.group;
  if (group_ && group_->size() > 1) {
    rank_ = group_->rank();
    world_ = group_->size();
    if (rank_ != 0) options_.checkpoint_dir.clear();  // rank 0's files hold every rank's parameters
  }
  if (const int cuda = CudaIndex(options_.device); cuda >= 0) {
    std::string why;
    utilization_ = DeviceUtilization::Open(NvmlDeviceOf(cuda, std::getenv("CUDA_VISIBLE_DEVICES")), &why);
    if (!utilization_) LogLine("gradwatch: reporting no device utilisation: ", why);
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
    lo.rank = static_cast<uint32_t>(rank_);
    lo.world_size = static_cast<uint32_t>(world_);
    lo.heartbeat_interval = options_.heartbeat_interval;
    link_ = std::make_unique<MonitorLink>(lo);
  }
  if (world_ > 1) {
    for (const auto& p : params_) {
      if (p.scalar_type() != params_.front().scalar_type() || p.device() != params_.front().device()) {
        throw std::invalid_argument("data parallel: every parameter must share one dtype and device; " +
                                    names_.front() + " and " + names_[&p - params_.data()] + " do not");
      }
      grad_numel_ += p.numel();
    }
    flat_ = torch::empty({grad_numel_ + Slots{world_}.size()}, params_.front().options().requires_grad(false));
    // Equal parameters (and buffers) from the start, whatever each rank's initialisation did.
    SetPhase(1, Phase::kCollective);
    std::vector<at::Tensor> state = params_;
    for (const auto& b : model_.buffers()) state.push_back(b);
    group_->Broadcast(state, 0);
    SetPhase(1, Phase::kCompute);
  }
  if (!options_.checkpoint_dir.empty()) std::filesystem::create_directories(options_.checkpoint_dir);
  if (options_.checkpoint_every > 0) SaveCheckpoint(0);  // the initial state is healthy by definition
}

Session::~Session() = default;

uint64_t Session::gate_timeouts() const { return link_ ? link_->stats().gate_timeouts : 0; }
std::string Session::refused() const { return link_ ? link_->stats().refused : std::string(); }

void Session::SetPhase(uint64_t step, Phase phase) {
  if (link_) link_->SetPhase(step, phase);
}

bool Session::BeginStep(uint64_t step) {
  if (world_ == 1 && stop_wanted_) {  // at once: no other rank to agree with
    stopped_ = true;
    return false;
  }
  step_ = step;
  const auto start = std::chrono::steady_clock::now();
  SetPhase(step, Phase::kCompute);
  for (const auto& command : TakeCommands()) Apply(command, step);
  if (stop_requested_) {
    stopped_ = stopped_by_command_ = true;
  } else if (stop_agreed_) {
    stopped_ = true;
  }
  step_start_ = data_ready_ = std::chrono::steady_clock::now();
  begin_seconds_ = std::chrono::duration<double>(step_start_ - start).count();
  data_marked_ = false;
  scalars_.clear();
  return !stopped_;
}

void Session::QueueCommand(const Command& command) {
  if (rank_ == 0) queued_.push_back(command);
}

// The commands every rank applies at this step: with one process, the queued and the monitor's;
// data parallel, rank 0's, broadcast when the last all-reduce said there are any.
std::vector<Command> Session::TakeCommands() {
  std::vector<Command> out;
  out.swap(queued_);
  if (world_ == 1 || rank_ == 0) {
    if (link_) {
      for (auto& c : link_->TakeCommands()) out.push_back(std::move(c));
    }
  }
  if (world_ == 1) return out;
  if (!commands_waiting_) {
    queued_.swap(out);  // not announced yet: the next all-reduce does
    return {};
  }
  commands_waiting_ = false;
  std::string bytes;
  if (rank_ == 0) {
    for (auto& c : out) {
      // "The newest checkpoint" named by its step, so that no rank can read it differently.
      if (c.action == Command::Action::kRollback && c.rollback_to == 0 && !checkpoints_.empty()) {
        c.rollback_to = checkpoints_.back().step;
      }
    }
    bytes = EncodeCommands(out);
  }
  SetPhase(step_, Phase::kCollective);
  group_->Broadcast(&bytes, 0);
  SetPhase(step_, Phase::kCompute);
  return DecodeCommands(bytes);
}

void Session::DataReady() {
  data_ready_ = std::chrono::steady_clock::now();
  data_marked_ = true;
}

void Session::Scalar(const std::string& name, double value) { scalars_[name] = value; }

// The step's time by phase and the process's memory; `entered` is when BeforeUpdate began.
SystemSample Session::MeasureSystem(std::chrono::steady_clock::time_point entered) {
  using Seconds = std::chrono::duration<double>;
  const auto now = std::chrono::steady_clock::now();
  SystemSample s;
  if (data_marked_) s.data_seconds = Seconds(data_ready_ - step_start_).count();
  s.compute_seconds = Seconds(entered - data_ready_).count();
  s.report_seconds = begin_seconds_ + Seconds(now - entered).count();
  s.resident_bytes = ResidentBytes();
  CudaMemory(options_.device, &s);
  if (utilization_) s.device_utilization = utilization_->Fraction(now);
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
  if (link_) link_->Ack({command.id, step, ok, detail.str()});
  applied_.push_back({command.id, ActionName(command.action), detail.str(), step, ok});
  if (options_.log) {
    LogLine(world_ > 1 ? "gradwatch[rank " + std::to_string(rank_) + "]: step " : "gradwatch: step ", step, ": ",
        ok ? "applied " : "rejected ", command.id, " (", command.issued_by, "): ", detail.str(), " — ",
        command.reason);
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

// Data parallel: one SUM all-reduce of the gradients and the slots (see session.h), the
// gradients averaged back into place, then the averaged gradient's norms with the slots in one
// device-to-host copy. Sets the ranks' values in *stats and the agreed flags.
void Session::AverageGradients(const StepInputs& in, std::chrono::steady_clock::time_point entered,
                               GradStats* stats) {
  torch::NoGradGuard no_grad;
  const Slots slot{world_};
  const int64_t n = grad_numel_;
  at::Tensor grads = flat_.narrow(0, 0, n);
  at::Tensor slots = flat_.narrow(0, n, slot.size());
  int64_t offset = 0;
  for (const auto& p : params_) {
    at::Tensor part = flat_.narrow(0, offset, p.numel());
    if (p.grad().defined()) {
      part.copy_(p.grad().reshape(-1));
    } else {
      part.zero_();  // another rank's gradient may not be: the average is defined everywhere
    }
    offset += p.numel();
  }
  slots.zero_();
  slots.narrow(0, slot.loss(rank_), 1).fill_(in.loss);
  slots.narrow(0, slot.norm(rank_), 1).copy_(grads.norm().reshape(1));  // on the device: no sync
  slots.narrow(0, slot.compute(rank_), 1).fill_(std::chrono::duration<double>(entered - data_ready_).count());
  if (rank_ == 0 && (!queued_.empty() || (link_ && link_->PendingCommands() > 0))) {
    slots.narrow(0, slot.commands(), 1).fill_(1);
  }
  if (stop_wanted_) slots.narrow(0, slot.stop(), 1).fill_(1);
  SetPhase(step_, Phase::kCollective);
  group_->AllReduceSum(flat_);
  SetPhase(step_, Phase::kCompute);
  grads.div_(world_);
  offset = 0;
  for (auto& p : params_) {
    at::Tensor part = flat_.narrow(0, offset, p.numel()).view_as(p);
    if (p.grad().defined()) {
      p.mutable_grad().copy_(part);
    } else {
      p.mutable_grad() = part.clone();
    }
    offset += p.numel();
  }
  std::vector<double> values;
  *stats = ComputeGradStats(params_, slots, &values);
  const auto from = [&](int64_t at) { return std::vector<double>(values.begin() + at, values.begin() + at + world_); };
  rank_losses_ = from(slot.loss(0));
  rank_norms_ = from(slot.norm(0));
  rank_compute_ = from(slot.compute(0));
  commands_waiting_ = values[slot.commands()] > 0;
  stop_agreed_ = values[slot.stop()] > 0;
  last_local_norm_ = rank_norms_[rank_];
  double sum = 0;
  for (double l : rank_losses_) sum += l;
  last_loss_ = sum / world_;
}

bool Session::BeforeUpdate(const StepInputs& in) {
  const auto entered = std::chrono::steady_clock::now();
  reported_step_ = in.step;
  GradStats stats;
  if (world_ > 1) {
    AverageGradients(in, entered, &stats);
  } else {
    stats = ComputeGradStats(params_);
    last_loss_ = in.loss;
    last_local_norm_ = stats.global_norm;
  }
  last_norm_ = stats.global_norm;

  // Healthy statistics (for adaptive clipping and for deciding what to checkpoint), from values
  // that are the same on every rank: the global norm and the run's loss.
  double log_norm = std::log(std::max(stats.global_norm, 1e-30));
  double z = log_norm_.Z(log_norm, kLogStdFloor);  // 0 during the warm-up
  bool finite = std::isfinite(stats.global_norm) && std::isfinite(last_loss_);
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
  // Gated: rank 0's report awaits the verdict, which every rank then applies.
  const bool gated = options_.mode == Mode::kGated && update;
  std::optional<Verdict> verdict;
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
    r.update_ratio = last_update_ratio_;
    if (in.sample_ids) {
      const size_t n = std::min<size_t>(in.sample_ids->size(), 64);
      r.sample_ids.assign(in.sample_ids->begin(), in.sample_ids->begin() + static_cast<std::ptrdiff_t>(n));
    }
    r.awaiting_verdict = gated && rank_ == 0;
    r.scalars = std::move(scalars_);
    r.system = MeasureSystem(entered);
    if (world_ > 1) {
      r.local_grad_norm = last_local_norm_;
      if (rank_ == 0) {
        r.rank_losses = rank_losses_;
        r.rank_grad_norms = rank_norms_;
        r.rank_compute_seconds = rank_compute_;
      }
    }
    link_->Report(r);
    if (r.awaiting_verdict) {
      SetPhase(step_, Phase::kVerdict);
      verdict = link_->AwaitVerdict(in.step, options_.gate_timeout);
      SetPhase(step_, Phase::kCompute);
    }
  }
  rolled_back_to_ = 0;
  rolled_back_ = false;
  scalars_.clear();
  if (gated && world_ > 1) AgreeOnVerdict(&verdict);
  if (verdict) ApplyVerdict(*verdict, &update, &applied);
  if (update && applied.kind != Clip::Kind::kOff && applied.threshold > 0) {
    Clip saved = clipping_;
    clipping_ = applied;
    ClipGradients(stats.global_norm);
    clipping_ = saved;
  }
  if (!update) ++skipped_;
  return update;
}

// Rank 0's verdict (none: proceed) to every rank: decision, clip norm and learning-rate scale
// in one broadcast of three float64.
bool Session::AgreeOnVerdict(std::optional<Verdict>* verdict) {
  at::Tensor v = torch::zeros({3}, flat_.options().dtype(torch::kDouble));
  if (rank_ == 0 && *verdict) {
    v = torch::tensor({static_cast<double>((*verdict)->decision), (*verdict)->clip_norm, (*verdict)->lr_scale},
                      flat_.options().dtype(torch::kDouble));
  }
  SetPhase(step_, Phase::kCollective);
  group_->Broadcast(v, 0);
  SetPhase(step_, Phase::kCompute);
  at::Tensor host = v.cpu();
  const double* d = host.data_ptr<double>();
  if (static_cast<Verdict::Decision>(static_cast<int>(d[0])) == Verdict::Decision::kProceed) {
    verdict->reset();
    return false;
  }
  if (rank_ != 0) {
    Verdict agreed;
    agreed.decision = static_cast<Verdict::Decision>(static_cast<int>(d[0]));
    agreed.clip_norm = d[1];
    agreed.lr_scale = d[2];
    agreed.reason = "rank 0's verdict";
    *verdict = agreed;
  }
  return true;
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
  if (options_.log) {
    LogLine(world_ > 1 ? "gradwatch[rank " + std::to_string(rank_) + "]: step " : "gradwatch: step ", step_,
        ": veto: ", verdict.reason);
  }
}

void Session::AfterUpdate() {
  SetPhase(step_ + 1, Phase::kCompute);  // between steps: in the next one, as far as the monitor knows
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
  if (eval.step == 0 || eval.step > reported_step_) {
    throw std::invalid_argument("ReportEval: step " + std::to_string(eval.step) +
                                " has not been reported (last step reported: " + std::to_string(reported_step_) +
                                "); report an eval after its step's BeforeUpdate");
  }
  if (eval.step < last_eval_step_) {
    throw std::invalid_argument("ReportEval: evals go in step order: step " + std::to_string(eval.step) +
                                " after an eval of step " + std::to_string(last_eval_step_));
  }
  last_eval_step_ = eval.step;
  // Data parallel: the run's evaluation is rank 0's (every rank holds the same parameters).
  if (link_ && rank_ == 0) link_->Report(eval);
}

void Session::Finish(std::chrono::milliseconds deadline) {
  if (!link_) return;
  link_->SetPhase(step_, Phase::kNone);
  // With no monitor up, waiting the whole deadline would only delay the end of training.
  if (!link_->stats().connected) deadline = std::min(deadline, std::chrono::milliseconds(1000));
  // Stopped on request (RequestStop: a signal) says so in the goodbye; a stop command's run
  // is stopped by the command's ack already.
  link_->Close(deadline, stopped_ && !stopped_by_command_);
  auto s = link_->stats();
  if (s.acked_through < step_ && options_.log) {
    std::cerr << "gradwatch: the monitor stored steps up to " << s.acked_through << " of " << step_ << " ("
              << step_ - s.acked_through << " not delivered, " << s.dropped << " dropped from a full buffer)"
              << std::endl;
  }
}

}  // namespace gradwatch::torchmon
