#include "gradwatch/common/log_line.h"
#include "train/trainer.h"

#include <torch/torch.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <thread>

#include "gradwatch/torch/group.h"
#include "gradwatch/torch/session.h"
#include "train/data.h"
#include "train/jaccard.h"
#include "train/sampler.h"
#include "train/unet.h"

namespace gradwatch::train {
namespace {


// The CUDA device of a rank is its local rank's (modulo the devices there are).
torch::Device PickDevice(const std::string& wanted, int local_rank) {
  bool cuda = torch::cuda::is_available();
  if (wanted == "cuda" && !cuda) {
    throw std::runtime_error("device: cuda requested, but this LibTorch has no CUDA or no GPU is visible");
  }
  if (wanted == "cuda" || (wanted == "auto" && cuda)) {
    return torch::Device(torch::kCUDA, static_cast<int8_t>(local_rank % std::max<int64_t>(1, torch::cuda::device_count())));
  }
  return torch::Device(torch::kCPU);
}

std::string GeneratedRunId() {
  return "run-" + std::to_string(std::time(nullptr)) + "-" + std::to_string(::getpid());
}

std::pair<Dataset, Dataset> LoadData(const TrainConfig& c) {
  auto [train, val] = c.data.dir.empty()
                          ? make_synthetic(c.data.synthetic)
                          : split_train_val(load_dataset_dir(c.data.dir), c.data.synthetic.val_fraction);
  if (c.data.augment) train = augment_x6(train);
  return {train, val};
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const TrainConfig& c, UNet& model) {
  if (c.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(c.lr));
  }
  return std::make_unique<torch::optim::SGD>(
      model->parameters(), torch::optim::SGDOptions(c.lr).momentum(c.momentum).nesterov(c.nesterov));
}

torchmon::RunDescription Describe(const TrainConfig& c) {
  torchmon::RunDescription d;
  d.model = "unet(depth=" + std::to_string(c.model.depth) + ",base=" + std::to_string(c.model.base) + ")";
  d.optimizer = c.optimizer == "adam" ? "adam" : c.nesterov ? "sgd(nesterov)" : "sgd";
  d.learning_rate = c.lr;
  d.batch_size = static_cast<uint32_t>(c.batch);
  d.total_steps = static_cast<uint64_t>(c.steps);
  d.eval_every = static_cast<uint32_t>(c.eval_every);
  d.loss = "jaccard";
  d.loss_upper_bound = 1.0;
  d.checkpoint_every = static_cast<uint32_t>(c.checkpoint_every);
  if (!c.scenario.empty()) d.labels["scenario"] = c.scenario;
  d.thresholds = c.thresholds;
  return d;
}

torchmon::Mode ModeOf(const std::string& mode) {
  return mode == "observe" ? torchmon::Mode::kObserve
         : mode == "gated" ? torchmon::Mode::kGated : torchmon::Mode::kGuard;
}

torchmon::Clip ClipOf(const ClipConfig& c) {
  torchmon::Clip clip;
  clip.kind = c.kind == "norm" ? torchmon::Clip::Kind::kNorm
              : c.kind == "value" ? torchmon::Clip::Kind::kValue : torchmon::Clip::Kind::kOff;
  clip.threshold = c.kind == "off" ? 0 : c.threshold;
  return clip;
}

// Loss and metrics on the whole validation split, predicted in chunks.
torchmon::EvalRecord Evaluate(UNet& model, const Dataset& val, int64_t step, torch::Device device) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> preds;
  for (int64_t i = 0; i < val.size(); i += 16) {
    int64_t end = std::min(val.size(), i + 16);
    preds.push_back(model->forward(val.images.slice(0, i, end).to(device)));
  }
  torch::Tensor pred = torch::cat(preds);
  torch::Tensor truth = val.masks.to(device);
  SegMetrics m = segmentation_metrics(truth, pred);
  torchmon::EvalRecord e;
  e.step = static_cast<uint64_t>(step);
  e.loss = jaccard_coef_loss(truth, pred).item<double>();
  e.jaccard_soft = m.jaccard_soft;
  e.jaccard_hard = m.jaccard_hard;
  e.accuracy = m.accuracy;
  return e;
}

// The faults of this rank: those without a rank and those naming it. Throws for a rank the
// job does not have.
std::vector<FaultConfig> FaultsOf(const std::vector<FaultConfig>& all, const torchmon::DistEnv& dist) {
  std::vector<FaultConfig> out;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i].rank >= dist.world_size) {
      throw std::runtime_error("faults[" + std::to_string(i) + "].rank: " + std::to_string(all[i].rank) +
                               " is not a rank of this job of " + std::to_string(dist.world_size));
    }
    if (all[i].rank < 0 || all[i].rank == dist.rank) out.push_back(all[i]);
  }
  return out;
}

// "stall" and "hang": time spent in the step's compute phase, before the forward pass.
void InjectDelays(const std::vector<FaultConfig>& faults, int64_t step0, const std::string& tag) {
  for (const auto& f : faults) {
    if (f.kind == "stall" && step0 >= f.step && step0 < f.step + f.count) {
      if (step0 == f.step) {
        LogLine(tag, "step ", step0 + 1, ": stalling ", f.seconds, " s a step for ", f.count, " step(s)");
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(f.seconds));
    }
    if (f.kind == "hang" && step0 == f.step) {
      LogLine(tag, "step ", step0 + 1, ": hanging (never reaching the collectives) until killed");
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }
  }
}

std::string Hex(uint64_t v) {
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(v));
  return out;
}

void InjectFaults(const std::vector<FaultConfig>& faults, int64_t step0, UNet& model, const std::string& tag) {
  for (const auto& f : faults) {
    if (f.kind == "grad_ascent" && step0 >= f.step) {
      for (auto& p : model->parameters()) {
        if (p.grad().defined()) p.grad().mul_(-f.factor);
      }
      if (step0 == f.step) LogLine(tag, "step ", step0 + 1, ": gradient ascent x", f.factor, " from here on");
      continue;
    }
    if (f.step != step0) continue;
    if (f.kind == "grad_spike") {
      for (auto& p : model->parameters()) {
        if (p.grad().defined()) p.grad().mul_(f.factor);
      }
      LogLine(tag, "step ", step0 + 1, ": injected gradient x", f.factor);
    } else if (f.kind == "nan") {
      auto params = model->parameters();
      params.front().grad().view(-1)[0] = std::nan("");
      LogLine(tag, "step ", step0 + 1, ": injected a NaN gradient");
    }
  }
}

double LrFault(const std::vector<FaultConfig>& faults, int64_t step0) {
  double factor = 1.0;
  for (const auto& f : faults) {
    if (f.kind == "lr_spike" && f.step == step0) factor *= f.factor;
    if (f.kind == "lr_ramp" && step0 >= f.step) factor *= std::pow(f.factor, (step0 - f.step) / 100.0);
  }
  return factor;
}

// Every step as gradwatch CSV, the format `gradwatch replay` reads. Written as it goes (a
// killed run keeps the steps it made); a failed write ends the run naming the file, so a
// trace with steps missing in the middle is never left behind as if it were whole.
class TraceWriter {
 public:
  explicit TraceWriter(const std::string& path) : path_(path) {
    if (path.empty()) return;
    out_.open(path);
    if (!out_) throw std::runtime_error("trace_csv: cannot write " + path + ": " + std::strerror(errno));
    out_ << "step,epoch,loss,lr,grad_norm,update_ratio,jaccard_soft,jaccard_hard,accuracy,val_loss,"
            "val_jaccard_soft,val_jaccard_hard,val_accuracy\n";
    out_.precision(9);
  }
  // update_ratio: NaN (a skipped update) is written as an empty cell, "not reported".
  void Step(int64_t step, int epoch, double loss, double lr, double norm, double update_ratio,
            const SegMetrics& m, const torchmon::EvalRecord* eval) {
    if (!out_.is_open()) return;
    out_ << step << "," << epoch << "," << loss << "," << lr << "," << norm << ",";
    if (!std::isnan(update_ratio)) out_ << update_ratio;
    out_ << "," << m.jaccard_soft << "," << m.jaccard_hard << "," << m.accuracy;
    if (eval) {
      out_ << "," << eval->loss << "," << eval->jaccard_soft << "," << eval->jaccard_hard << "," << eval->accuracy;
    } else {
      out_ << ",,,,";
    }
    out_ << "\n";
    Check();
  }
  // Flushes what is buffered; throws when any write failed.
  void Close() {
    if (!out_.is_open()) return;
    out_.close();
    Check();
  }

 private:
  void Check() {
    if (!out_) {
      throw std::runtime_error("trace_csv: cannot write " + path_ + ": " + (errno ? std::strerror(errno) : "write failed"));
    }
  }

  std::string path_;
  std::ofstream out_;
};

void RecordEval(const torchmon::EvalRecord& e, torchmon::Session& gw, TrainSummary& summary) {
  if (e.step > 0) gw.ReportEval(e);  // stopped before a first step: nothing to evaluate after
  summary.val_loss = e.loss;
  summary.val_jaccard_soft = e.jaccard_soft;
  summary.val_jaccard_hard = e.jaccard_hard;
  summary.val_accuracy = e.accuracy;
}

double MeanOfLast(const std::vector<double>& v, size_t n) {
  if (v.empty()) return std::nan("");
  size_t k = std::min(n, v.size());
  return std::accumulate(v.end() - k, v.end(), 0.0) / double(k);
}

// This rank's place in the job, once the group is formed: the run id every rank uses (rank 0's)
// and the prefix of its log lines.
struct JobPlace {
  std::shared_ptr<torchmon::Group> group;
  std::string run_id;
  std::string tag = "gradwatch-train: ";
};

JobPlace JoinJob(const TrainConfig& config, const torchmon::DistEnv& dist, torch::Device device) {
  JobPlace job;
  job.run_id = config.run_id;
  if (dist.distributed()) {
    job.tag = "gradwatch-train[rank " + std::to_string(dist.rank) + "]: ";
    if (config.batch % dist.world_size != 0) {
      throw std::runtime_error("batch: " + std::to_string(config.batch) + " items do not split evenly over the job's " +
                               std::to_string(dist.world_size) + " ranks");
    }
    torchmon::GroupOptions go;
    go.device = device.str();
    job.group = torchmon::Group::Join(dist, go);
    if (job.run_id.empty() && dist.rank == 0) job.run_id = GeneratedRunId();
    job.group->Broadcast(&job.run_id, 0);  // one run, whichever rank generated its id
    LogLine(job.tag, "joined the job of ", dist.world_size, " ranks (", dist.source, ", ", job.group->backend(),
        ", store ", dist.master_addr, ":", dist.master_port, ")");
  } else if (job.run_id.empty()) {
    job.run_id = GeneratedRunId();
  }
  return job;
}

}  // namespace

TrainSummary Train(const TrainConfig& config, const std::atomic<int>* interrupt, const torchmon::DistEnv& dist) {
  auto started = std::chrono::steady_clock::now();
  torch::manual_seed(config.seed);
  torch::set_num_threads(config.threads);
  torch::Device device = PickDevice(config.device, dist.local_rank);
  if (device.is_cuda()) {
    // Same seed, same curve on the GPU too: no autotuned or nondeterministic conv kernels.
    at::globalContext().setBenchmarkCuDNN(false);
    at::globalContext().setDeterministicCuDNN(true);
  }
  const auto faults = FaultsOf(EffectiveFaults(config), dist);
  JobPlace job = JoinJob(config, dist, device);
  const std::string& tag = job.tag;
  auto [train, val] = LoadData(config);
  train.images = train.images.to(device);
  train.masks = train.masks.to(device);

  UNetOptions uo;
  uo.in_channels = static_cast<int>(train.images.size(1));
  uo.depth = config.model.depth;
  uo.base = config.model.base;
  UNet model(uo);
  model->to(device);
  auto optimizer = MakeOptimizer(config, model);

  TrainSummary summary;
  summary.run_id = job.run_id;
  summary.device = device.str();
  summary.rank = dist.rank;
  summary.world_size = dist.world_size;
  torchmon::SessionOptions so;
  so.monitor = MonitorEnabled(config) ? config.monitor : "";
  so.run_id = summary.run_id;
  so.mode = ModeOf(config.mode);
  so.run = Describe(config);
  so.device = device.str();
  so.gate_timeout = std::chrono::milliseconds(config.gate_timeout_ms);
  so.checkpoint_every = static_cast<uint32_t>(config.checkpoint_every);
  so.checkpoint_dir = config.checkpoint_dir;
  so.spool = RankPath(config.spool, dist.rank);
  so.clipping = ClipOf(config.clip);
  so.group = job.group;
  torchmon::Session gw(*model, *optimizer, so);  // data parallel: rank 0's initial parameters to all

  ShardSampler sampler(train.size(), config.batch, config.seed, dist.rank, dist.world_size);
  TraceWriter trace(RankPath(config.trace_csv, dist.rank));
  std::vector<double> norms;
  LogLine(tag, "run ", summary.run_id, " on ", summary.device, ", ", train.size(), " training / ", val.size(),
      " validation images, ", config.steps, " steps",
      dist.distributed() ? ", " + std::to_string(sampler.batch()) + " items a step on this rank" : "",
      so.monitor.empty() ? ", no monitor" : ", monitor " + so.monitor + " (" + config.mode + ")");
  const std::string step_tag = dist.distributed() ? "[rank " + std::to_string(dist.rank) + "] " : "";

  int signalled = 0;
  for (int64_t step = 1; step <= config.steps; ++step) {
    if (interrupt && interrupt->load() != 0 && signalled == 0) {
      signalled = interrupt->load();
      LogLine(tag, "stopping on signal ", signalled, " before step ", (dist.distributed() ? std::to_string(step + 1) + " (the step boundary every rank agrees on)"
                                       : std::to_string(step)));
      gw.RequestStop();
    }
    if (!gw.BeginStep(static_cast<uint64_t>(step))) {
      if (gw.stopped_by_command()) {
        summary.stopped_by_command = true;
        LogLine(tag, "stopped by command before step ", step);
      } else if (signalled != 0) {
        summary.stopped_by_signal = signalled;
      } else {
        summary.stopped_with_job = true;
        LogLine(tag, "stopped with the job before step ", step, ": another rank was signalled");
      }
      break;
    }
    const int64_t step0 = step - 1;
    const std::vector<int64_t> items = sampler.next();
    auto index = torch::tensor(items, torch::kLong).to(device);
    torch::Tensor x = train.images.index_select(0, index), y = train.masks.index_select(0, index);
    gw.DataReady();
    InjectDelays(faults, step0, tag);
    gw.SetLearningRate(ScheduledLr(config, step0) * LrFault(faults, step0));
    optimizer->zero_grad();
    torch::Tensor pred = model->forward(x);
    torch::Tensor loss = jaccard_coef_loss(y, pred);
    loss.backward();
    InjectFaults(faults, step0, model, tag);
    SegMetrics m = segmentation_metrics(y, pred.detach());
    double loss_v = loss.item<double>();
    // A user scalar: the mean predicted foreground probability, pinned near 0 or 1 once the
    // sigmoid saturates (the case's collapse). Thresholds can watch it: scalar_min.output_mean.
    gw.Scalar("output_mean", pred.detach().mean().item<double>());
    if (gw.BeforeUpdate({uint64_t(step), uint32_t(sampler.epoch()), loss_v, m.jaccard_soft, m.jaccard_hard,
                         m.accuracy, &items})) {
      optimizer->step();
    }
    gw.AfterUpdate();
    summary.loss_curve.push_back(gw.last_loss());
    norms.push_back(gw.last_grad_norm());
    summary.steps_run = step;
    std::optional<torchmon::EvalRecord> eval;
    if (config.eval_every > 0 && (step % config.eval_every == 0 || step == config.steps)) {
      eval = Evaluate(model, val, step, device);
      RecordEval(*eval, gw, summary);
    }
    trace.Step(step, sampler.epoch(), loss_v, ScheduledLr(config, step0) * LrFault(faults, step0) * gw.lr_scale(),
               gw.last_grad_norm(), gw.last_update_ratio(), m, eval ? &*eval : nullptr);
    if (config.log_every > 0 && step % config.log_every == 0) {
      const std::string refused = gw.refused();  // a refused run is unguarded: every line says so
      std::fprintf(stderr, "%sstep %5lld/%lld  loss %.4f  jaccard %.3f  grad_norm %.4g  lr %.3g%s%s\n",
                   step_tag.c_str(), static_cast<long long>(step), static_cast<long long>(config.steps), loss_v,
                   m.jaccard_hard, gw.last_grad_norm(), ScheduledLr(config, step0) * gw.lr_scale(),
                   gw.clipping().kind != torchmon::Clip::Kind::kOff ? "  [clipping]" : "",
                   refused.empty() ? "" : ("  [UNGUARDED: monitor refused the run: " + refused + "]").c_str());
    }
  }
  if (config.eval_every == 0 || summary.steps_run % config.eval_every != 0 || summary.stopped_by_command ||
      summary.stopped_by_signal || summary.stopped_with_job) {
    RecordEval(Evaluate(model, val, summary.steps_run, device), gw, summary);
  }
  gw.Finish();
  trace.Close();
  summary.final_train_loss = MeanOfLast(summary.loss_curve, 10);
  summary.final_grad_norm = MeanOfLast(norms, 10);
  summary.collapsed = summary.final_train_loss >= 0.99 && summary.val_jaccard_hard <= 0.01;
  summary.updates_skipped = gw.updates_skipped();
  summary.updates_vetoed = gw.updates_vetoed();
  summary.gate_timeouts = gw.gate_timeouts();
  summary.monitor_refused = gw.refused();
  for (const auto& c : gw.applied_commands()) summary.commands.push_back({c.id, c.action, c.detail, c.step, c.applied});
  const torchmon::ParamChecksum checksum = torchmon::ChecksumOf(model->parameters());
  summary.param_sum = checksum.sum;
  summary.param_fnv1a64 = Hex(checksum.hash);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return summary;
}

std::string SummaryJson(const TrainSummary& s) {
  nlohmann::json commands = nlohmann::json::array();
  for (const auto& c : s.commands) {
    commands.push_back({{"id", c.id}, {"action", c.action}, {"detail", c.detail}, {"step", c.step},
                        {"applied", c.applied}});
  }
  nlohmann::json j = {{"run_id", s.run_id},
                      {"device", s.device},
                      {"rank", s.rank},
                      {"world_size", s.world_size},
                      {"steps_run", s.steps_run},
                      {"final_train_loss", s.final_train_loss},
                      {"final_grad_norm", s.final_grad_norm},
                      {"val_loss", s.val_loss},
                      {"val_jaccard_soft", s.val_jaccard_soft},
                      {"val_jaccard_hard", s.val_jaccard_hard},
                      {"val_accuracy", s.val_accuracy},
                      {"collapsed", s.collapsed},
                      {"stopped_by_command", s.stopped_by_command},
                      {"stopped_by_signal", s.stopped_by_signal},
                      {"stopped_with_job", s.stopped_with_job},
                      {"updates_skipped", s.updates_skipped},
                      {"updates_vetoed", s.updates_vetoed},
                      {"gate_timeouts", s.gate_timeouts},
                      {"monitor_refused", s.monitor_refused},
                      {"seconds", s.seconds},
                      {"commands_applied", commands},
                      {"parameter_checksum", {{"sum", s.param_sum}, {"fnv1a64", s.param_fnv1a64}}},
                      {"loss_curve", s.loss_curve}};
  return j.dump(2);
}

}  // namespace gradwatch::train
