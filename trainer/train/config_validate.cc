// Validate: every semantic problem of a TrainConfig as "field: reason", including the upper
// bounds of config.h's Limits. Split from config.cc (parsing and printing).
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "config.h"
#include "gradwatch/common/run_id.h"
#include "gradwatch/detect/thresholds.h"

namespace gradwatch::train {
namespace {

// ---- Validate helpers: each appends "field: reason" lines to `out`.

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

void check_one_of(const std::string& field, const std::string& value,
                  std::initializer_list<const char*> allowed, std::vector<std::string>& out) {
  std::string expected;
  for (const char* a : allowed) {
    if (value == a) return;
    if (a != *allowed.begin()) expected += "|";
    expected += a;
  }
  out.push_back(field + ": unknown \"" + value + "\", expected " + expected);
}

void check_at_least(const std::string& field, int64_t value, int64_t min,
                    std::vector<std::string>& out) {
  if (value < min) {
    out.push_back(field + ": must be >= " + std::to_string(min) + ", got " + std::to_string(value));
  }
}

void check_at_most(const std::string& field, int64_t value, int64_t max, std::vector<std::string>& out) {
  if (value > max) {
    out.push_back(field + ": must be <= " + std::to_string(max) + ", got " + std::to_string(value));
  }
}

std::string gib(double bytes) { return num(bytes / double(int64_t{1} << 30)) + " GiB"; }

void check_fraction(const std::string& field, double value, std::vector<std::string>& out) {
  if (!(value >= 0.0 && value < 1.0)) {
    out.push_back(field + ": must be in [0, 1), got " + num(value));
  }
}

}  // namespace


namespace {

void validate_run(const TrainConfig& c, std::vector<std::string>& out) {
  if (!c.run_id.empty() && !ValidRunId(c.run_id)) {
    out.push_back(std::string("run_id: must be ") + kRunIdRule + ", or empty; got \"" + c.run_id + "\"");
  }
  check_one_of("device", c.device, {"auto", "cpu", "cuda"}, out);
  check_at_least("threads", c.threads, 1, out);
  check_at_least("steps", c.steps, 1, out);
  check_at_least("batch", c.batch, 1, out);
  check_at_least("eval_every", c.eval_every, 0, out);
  check_at_least("log_every", c.log_every, 0, out);
  check_at_least("checkpoint_every", c.checkpoint_every, 0, out);
  check_at_most("threads", c.threads, Limits::kThreads, out);
  check_at_most("steps", c.steps, Limits::kSteps, out);
  check_at_most("batch", c.batch, Limits::kBatch, out);
  check_at_most("eval_every", c.eval_every, Limits::kSteps, out);
  check_at_most("log_every", c.log_every, Limits::kSteps, out);
  check_at_most("checkpoint_every", c.checkpoint_every, Limits::kSteps, out);
  if (c.model.depth < 1 || c.model.depth > 6) {
    out.push_back("model.depth: 1..6, got " + std::to_string(c.model.depth));
  }
  if (c.model.base < 1 || c.model.base > 256) {
    out.push_back("model.base: 1..256, got " + std::to_string(c.model.base));
  }
}

// The files a run writes: path lengths, and how many checkpoints land on disk.
void validate_outputs(const TrainConfig& c, std::vector<std::string>& out) {
  if (!c.checkpoint_dir.empty() && c.checkpoint_every > 0 && c.steps / c.checkpoint_every > Limits::kCheckpointFiles) {
    out.push_back("checkpoint_every: " + std::to_string(c.checkpoint_every) + " writes " +
                  std::to_string(c.steps / c.checkpoint_every) + " checkpoints of " + std::to_string(c.steps) +
                  " steps into checkpoint_dir; must be <= " + std::to_string(Limits::kCheckpointFiles));
  }
  for (auto [field, path] : {std::pair<const char*, const std::string*>{"checkpoint_dir", &c.checkpoint_dir},
                             {"summary_json", &c.summary_json}, {"trace_csv", &c.trace_csv},
                             {"spool", &c.spool}, {"data.dir", &c.data.dir}}) {
    if (path->size() > Limits::kPath) {
      out.push_back(std::string(field) + ": must be <= " + std::to_string(Limits::kPath) + " characters, got " +
                    std::to_string(path->size()));
    }
  }
}

// What the synthetic set and the first U-Net level would take, once every factor is in range.
void validate_memory(const TrainConfig& c, std::vector<std::string>& out) {
  const SyntheticOptions& s = c.data.synthetic;
  if (s.images < 1 || s.images > Limits::kImages || s.channels < 1 || s.channels > Limits::kChannels ||
      s.size < 1 || s.size > Limits::kImageSide || c.batch < 1 || c.batch > Limits::kBatch) {
    return;
  }
  const double pixels = double(s.size) * double(s.size);
  const double set = double(s.images) * double(s.channels + 1) * pixels * 4.0 * (c.data.augment ? 6 : 1);
  if (set > double(Limits::kSyntheticBytes)) {
    out.push_back("data.images: " + std::to_string(s.images) + " images of " + std::to_string(s.channels) +
                  "+1 channels at " + std::to_string(s.size) + "x" + std::to_string(s.size) + " need " + gib(set) +
                  (c.data.augment ? " (x6 augmented)" : "") + "; must be <= " + gib(double(Limits::kSyntheticBytes)));
  }
  const double first_level = double(c.batch) * double(std::max(c.model.base, 1)) * pixels * 4.0;
  if (first_level > double(Limits::kActivationBytes)) {
    out.push_back("batch: " + std::to_string(c.batch) + " items x model.base " + std::to_string(c.model.base) +
                  " channels at " + std::to_string(s.size) + "x" + std::to_string(s.size) + " need " +
                  gib(first_level) + " for the first level; must be <= " + gib(double(Limits::kActivationBytes)));
  }
}

void validate_data(const TrainConfig& c, std::vector<std::string>& out) {
  const SyntheticOptions& s = c.data.synthetic;
  check_fraction("data.val_fraction", s.val_fraction, out);
  if (!c.data.dir.empty()) return;  // the rest describes the synthetic set
  check_at_least("data.images", s.images, 1, out);
  check_at_least("data.channels", s.channels, 1, out);
  check_at_least("data.size", s.size, 1, out);
  check_at_most("data.images", s.images, Limits::kImages, out);
  check_at_most("data.channels", s.channels, Limits::kChannels, out);
  check_at_most("data.size", s.size, Limits::kImageSide, out);
  validate_memory(c, out);
  check_fraction("data.foreground_fraction", s.foreground_fraction, out);
  if (!(s.noise >= 0.0 && std::isfinite(s.noise))) {
    out.push_back("data.noise: must be >= 0, got " + num(s.noise));
  }
  const int64_t multiple = int64_t{1} << std::clamp(c.model.depth - 1, 0, 5);
  if (s.size >= 1 && s.size % multiple != 0) {
    out.push_back("data.size: " + std::to_string(s.size) + " is not divisible by " +
                  std::to_string(multiple) + " (2^(model.depth-1))");
  }
  if (s.images < 1 || !(s.val_fraction >= 0.0 && s.val_fraction < 1.0)) return;
  const int64_t train = s.images - ValidationCount(s.images, s.val_fraction);
  const int64_t items = train * (c.data.augment ? 6 : 1);
  if (train < 1) {
    out.push_back("data.val_fraction: " + num(s.val_fraction) + " of " +
                  std::to_string(s.images) + " images leaves no training items");
  } else if (c.batch > items) {
    out.push_back("batch: " + std::to_string(c.batch) + " exceeds the " + std::to_string(items) +
                  " synthetic training items");
  }
}

void validate_optimizer(const TrainConfig& c, std::vector<std::string>& out) {
  check_one_of("optimizer", c.optimizer, {"sgd", "adam"}, out);
  if (!(c.lr > 0.0 && std::isfinite(c.lr))) out.push_back("lr: must be > 0, got " + num(c.lr));
  if (!(c.momentum >= 0.0 && c.momentum < 1.0)) {
    out.push_back("momentum: must be in [0, 1), got " + num(c.momentum));
  }
  if (c.optimizer == "sgd" && c.nesterov && c.momentum == 0.0) {
    out.push_back("nesterov: needs momentum > 0");
  }
  check_one_of("lr_schedule", c.lr_schedule, {"constant", "cosine", "step"}, out);
  check_at_least("lr_step_every", c.lr_step_every, 1, out);
  check_at_most("lr_step_every", c.lr_step_every, Limits::kSteps, out);
  check_at_least("lr_warmup_steps", c.lr_warmup_steps, 0, out);
  check_at_most("lr_warmup_steps", c.lr_warmup_steps, Limits::kSteps, out);
  if (!(c.lr_step_gamma > 0.0 && c.lr_step_gamma <= 1.0)) {
    out.push_back("lr_step_gamma: must be in (0, 1], got " + num(c.lr_step_gamma));
  }
  check_one_of("clip.kind", c.clip.kind, {"off", "norm", "value"}, out);
  if (c.clip.kind != "off" && !(c.clip.threshold > 0.0 && std::isfinite(c.clip.threshold))) {
    out.push_back("clip.threshold: must be > 0, got " + num(c.clip.threshold));
  }
}

bool valid_address(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) return address.size() > 5;
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  const std::string port = address.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  const int p = std::stoi(port);
  return p >= 1 && p <= 65535;
}

void validate_monitor(const TrainConfig& c, std::vector<std::string>& out) {
  if (!c.monitor.empty() && !valid_address(c.monitor)) {
    out.push_back("monitor: expected host:port (port 1..65535) or unix:path, got \"" +
                  c.monitor + "\"");
  }
  check_one_of("mode", c.mode, {"observe", "guard", "gated"}, out);
  if (c.gate_timeout_ms < 1 || c.gate_timeout_ms > 60000) {
    out.push_back("gate_timeout_ms: 1..60000, got " + std::to_string(c.gate_timeout_ms));
  }
}

void validate_faults(const TrainConfig& c, std::vector<std::string>& out) {
  if (c.faults.size() > Limits::kFaults) {
    out.push_back("faults: must hold <= " + std::to_string(Limits::kFaults) + " faults, got " +
                  std::to_string(c.faults.size()));
  }
  for (size_t i = 0; i < c.faults.size() && i < Limits::kFaults; ++i) {
    const FaultConfig& f = c.faults[i];
    const std::string name = "faults[" + std::to_string(i) + "]";
    check_one_of(name + ".kind", f.kind,
                 {"grad_spike", "lr_spike", "lr_ramp", "grad_ascent", "nan", "stall", "hang"}, out);
    if (f.step < 0 || f.step >= c.steps) {
      out.push_back(name + ".step: must be in 0.." + std::to_string(c.steps - 1) + ", got " +
                    std::to_string(f.step));
    }
    const bool scales = f.kind != "nan" && f.kind != "stall" && f.kind != "hang";
    if (scales && !(f.factor > 0.0 && std::isfinite(f.factor))) {
      out.push_back(name + ".factor: must be > 0, got " + num(f.factor));
    }
    if (f.rank < -1 || f.rank >= Limits::kRanks) {
      out.push_back(name + ".rank: must be -1 (every rank) or in 0.." + std::to_string(Limits::kRanks - 1) +
                    ", got " + std::to_string(f.rank));
    }
    if (f.kind == "stall" && !(f.seconds > 0.0 && f.seconds <= 86400.0)) {
      out.push_back(name + ".seconds: must be in (0, 86400], got " + num(f.seconds));
    }
    if (f.kind == "stall") {
      check_at_least(name + ".count", f.count, 1, out);
      check_at_most(name + ".count", f.count, Limits::kSteps, out);
    }
  }
  check_one_of("scenario", c.scenario, {"", "seed"}, out);
  if (c.scenario == "seed" && !c.faults.empty()) {
    out.push_back("scenario: \"seed\" sets the faults itself; remove the " +
                  std::to_string(c.faults.size()) + " explicit fault(s)");
  }
}

// Each override through the detectors' own table, so the names and ranges are the monitor's.
void validate_thresholds(const TrainConfig& c, std::vector<std::string>& out) {
  if (c.thresholds.size() > Limits::kThresholds) {
    out.push_back("thresholds: must hold <= " + std::to_string(Limits::kThresholds) + " overrides, got " +
                  std::to_string(c.thresholds.size()));
    return;
  }
  for (const auto& [name, value] : c.thresholds) {
    detect::Thresholds t;
    if (Status bad = t.Apply({{name, value}}); !bad.ok()) out.push_back("thresholds: " + bad.message());
  }
}

}  // namespace

std::vector<std::string> Validate(const TrainConfig& config) {
  std::vector<std::string> problems;
  validate_run(config, problems);
  validate_outputs(config, problems);
  validate_data(config, problems);
  validate_optimizer(config, problems);
  validate_monitor(config, problems);
  validate_faults(config, problems);
  validate_thresholds(config, problems);
  return problems;
}

}  // namespace gradwatch::train
