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
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <stdexcept>

#include "gradwatch/torch/session.h"
#include "train/data.h"
#include "train/jaccard.h"
#include "train/sampler.h"
#include "train/unet.h"

namespace gradwatch::train {
namespace {

torch::Device PickDevice(const std::string& wanted) {
  bool cuda = torch::cuda::is_available();
  if (wanted == "cuda" && !cuda) {
    throw std::runtime_error("device: cuda requested, but this LibTorch has no CUDA or no GPU is visible");
  }
  return (wanted == "cuda" || (wanted == "auto" && cuda)) ? torch::Device(torch::kCUDA, 0)
                                                          : torch::Device(torch::kCPU);
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

void InjectFaults(const std::vector<FaultConfig>& faults, int64_t step0, UNet& model) {
  for (const auto& f : faults) {
    if (f.kind == "grad_ascent" && step0 >= f.step) {
      for (auto& p : model->parameters()) {
        if (p.grad().defined()) p.grad().mul_(-f.factor);
      }
      if (step0 == f.step) std::cerr << "gradwatch-train: step " << step0 + 1 << ": gradient ascent x" << f.factor << " from here on\n";
      continue;
    }
    if (f.step != step0) continue;
    if (f.kind == "grad_spike") {
      for (auto& p : model->parameters()) {
        if (p.grad().defined()) p.grad().mul_(f.factor);
      }
      std::cerr << "gradwatch-train: step " << step0 + 1 << ": injected gradient x" << f.factor << "\n";
    } else if (f.kind == "nan") {
      auto params = model->parameters();
      params.front().grad().view(-1)[0] = std::nan("");
      std::cerr << "gradwatch-train: step " << step0 + 1 << ": injected a NaN gradient\n";
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
  gw.ReportEval(e);
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

}  // namespace

TrainSummary Train(const TrainConfig& config, const std::atomic<int>* interrupt) {
  auto started = std::chrono::steady_clock::now();
  torch::manual_seed(config.seed);
  torch::set_num_threads(config.threads);
  torch::Device device = PickDevice(config.device);
  if (device.is_cuda()) {
    // Same seed, same curve on the GPU too: no autotuned or nondeterministic conv kernels.
    at::globalContext().setBenchmarkCuDNN(false);
    at::globalContext().setDeterministicCuDNN(true);
  }
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
  summary.run_id = config.run_id.empty() ? GeneratedRunId() : config.run_id;
  summary.device = device.str();
  torchmon::SessionOptions so;
  so.monitor = MonitorEnabled(config) ? config.monitor : "";
  so.run_id = summary.run_id;
  so.mode = ModeOf(config.mode);
  so.run = Describe(config);
  so.device = device.str();
  so.gate_timeout = std::chrono::milliseconds(config.gate_timeout_ms);
  so.checkpoint_every = static_cast<uint32_t>(config.checkpoint_every);
  so.checkpoint_dir = config.checkpoint_dir;
  so.spool = config.spool;
  so.clipping = ClipOf(config.clip);
  torchmon::Session gw(*model, *optimizer, so);

  const auto faults = EffectiveFaults(config);
  BatchSampler sampler(train.size(), config.batch, config.seed);
  TraceWriter trace(config.trace_csv);
  std::vector<double> norms;
  std::cerr << "gradwatch-train: run " << summary.run_id << " on " << summary.device << ", "
            << train.size() << " training / " << val.size() << " validation images, " << config.steps
            << " steps" << (so.monitor.empty() ? ", no monitor" : ", monitor " + so.monitor + " (" + config.mode + ")")
            << std::endl;

  for (int64_t step = 1; step <= config.steps; ++step) {
    if (interrupt && interrupt->load() != 0) {
      summary.stopped_by_signal = interrupt->load();
      std::cerr << "gradwatch-train: stopping on signal " << summary.stopped_by_signal << " before step " << step
                << std::endl;
      break;
    }
    if (!gw.BeginStep(static_cast<uint64_t>(step))) {
      summary.stopped_by_command = true;
      std::cerr << "gradwatch-train: stopped by command before step " << step << std::endl;
      break;
    }
    const int64_t step0 = step - 1;
    const std::vector<int64_t> items = sampler.next();
    auto index = torch::tensor(items, torch::kLong).to(device);
    torch::Tensor x = train.images.index_select(0, index), y = train.masks.index_select(0, index);
    gw.DataReady();
    gw.SetLearningRate(ScheduledLr(config, step0) * LrFault(faults, step0));
    optimizer->zero_grad();
    torch::Tensor pred = model->forward(x);
    torch::Tensor loss = jaccard_coef_loss(y, pred);
    loss.backward();
    InjectFaults(faults, step0, model);
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
    summary.loss_curve.push_back(loss_v);
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
      std::fprintf(stderr, "step %5lld/%lld  loss %.4f  jaccard %.3f  grad_norm %.4g  lr %.3g%s%s\n",
                   static_cast<long long>(step), static_cast<long long>(config.steps), loss_v,
                   m.jaccard_hard, gw.last_grad_norm(), ScheduledLr(config, step0) * gw.lr_scale(),
                   gw.clipping().kind != torchmon::Clip::Kind::kOff ? "  [clipping]" : "",
                   refused.empty() ? "" : ("  [UNGUARDED: monitor refused the run: " + refused + "]").c_str());
    }
  }
  if (config.eval_every == 0 || summary.steps_run % config.eval_every != 0 || summary.stopped_by_command ||
      summary.stopped_by_signal) {
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
                      {"updates_skipped", s.updates_skipped},
                      {"updates_vetoed", s.updates_vetoed},
                      {"gate_timeouts", s.gate_timeouts},
                      {"monitor_refused", s.monitor_refused},
                      {"seconds", s.seconds},
                      {"commands_applied", commands},
                      {"loss_curve", s.loss_curve}};
  return j.dump(2);
}

}  // namespace gradwatch::train
