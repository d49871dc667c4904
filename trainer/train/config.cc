#include "config.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace gradwatch::train {
namespace {

constexpr double kPi = 3.14159265358979323846;

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// Reads the fields of one JSON object into a struct, one read() per field, and remembers which keys
// it consumed so that finish() can reject the rest. `prefix` ("", "model.", "faults[0].") names
// nested fields in messages.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string prefix, const std::string& source)
      : object_(object), prefix_(std::move(prefix)), source_(source) {
    if (!object_.is_object()) {
      fail(prefix_.empty() ? "the top level" : field(""), "a JSON object", &object_);
    }
  }

  template <typename T>
  void read(const std::string& key, T& out) {
    known_.insert(key);
    const auto it = object_.find(key);
    if (it == object_.end()) return;
    convert(*it, key, out);
  }

  // Calls `parse(value, prefix)` on the object under `key`, if present.
  template <typename F>
  void read_object(const std::string& key, F parse) {
    known_.insert(key);
    const auto it = object_.find(key);
    if (it != object_.end()) parse(*it, prefix_ + key + ".");
  }

  void finish() const {
    for (const auto& item : object_.items()) {
      if (known_.count(item.key()) == 0) {
        throw std::runtime_error(source_ + ": unknown field \"" + prefix_ + item.key() + "\"");
      }
    }
  }

  [[noreturn]] void fail(const std::string& what, const std::string& expected,
                         const json* got = nullptr) const {
    std::string message = source_ + ": " + what + ": expected " + expected;
    if (got != nullptr) message += ", got " + std::string(got->type_name());
    throw std::runtime_error(message);
  }

 private:
  std::string field(const std::string& key) const {
    const std::string name = prefix_ + key;
    return name.empty() || name.back() != '.' ? name : name.substr(0, name.size() - 1);
  }

  void convert(const json& v, const std::string& key, std::string& out) const {
    if (!v.is_string()) fail(field(key), "a string", &v);
    out = v.get<std::string>();
  }
  void convert(const json& v, const std::string& key, bool& out) const {
    if (!v.is_boolean()) fail(field(key), "true or false", &v);
    out = v.get<bool>();
  }
  void convert(const json& v, const std::string& key, double& out) const {
    if (!v.is_number()) fail(field(key), "a number", &v);
    out = v.get<double>();
  }
  void convert(const json& v, const std::string& key, uint64_t& out) const {
    if (!v.is_number_unsigned()) fail(field(key), "a non-negative integer", &v);
    out = v.get<uint64_t>();
  }
  template <typename Int>
  void convert(const json& v, const std::string& key, Int& out) const {
    static_assert(std::is_integral_v<Int> && std::is_signed_v<Int>);
    if (!v.is_number_integer()) fail(field(key), "an integer", &v);
    // A huge unsigned value would wrap in get<int64_t>(); range-check first.
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<Int>::max())) {
      fail(field(key), "an integer in range");
    }
    const int64_t wide = v.get<int64_t>();
    if (wide < std::numeric_limits<Int>::min() || wide > std::numeric_limits<Int>::max()) {
      fail(field(key), "an integer in range");
    }
    out = static_cast<Int>(wide);
  }

  const json& object_;
  std::string prefix_;
  const std::string& source_;
  std::set<std::string> known_;
};

void parse_model(const json& j, const std::string& prefix, const std::string& source,
                 ModelConfig& m) {
  ObjectReader r(j, prefix, source);
  r.read("depth", m.depth);
  r.read("base", m.base);
  r.finish();
}

void parse_data(const json& j, const std::string& prefix, const std::string& source,
                DataConfig& d) {
  ObjectReader r(j, prefix, source);
  r.read("dir", d.dir);
  r.read("augment", d.augment);
  r.read("val_fraction", d.synthetic.val_fraction);
  r.read("seed", d.synthetic.seed);
  r.read("images", d.synthetic.images);
  r.read("size", d.synthetic.size);
  r.read("channels", d.synthetic.channels);
  r.read("foreground_fraction", d.synthetic.foreground_fraction);
  r.read("noise", d.synthetic.noise);
  r.finish();
}

void parse_clip(const json& j, const std::string& prefix, const std::string& source,
                ClipConfig& c) {
  ObjectReader r(j, prefix, source);
  r.read("kind", c.kind);
  r.read("threshold", c.threshold);
  r.finish();
}

void parse_faults(const json& j, const std::string& source, std::vector<FaultConfig>& faults) {
  if (!j.is_array()) {
    throw std::runtime_error(source + ": faults: expected an array, got " + j.type_name());
  }
  faults.clear();
  for (size_t i = 0; i < j.size(); ++i) {
    FaultConfig f;
    ObjectReader r(j[i], "faults[" + std::to_string(i) + "].", source);
    r.read("kind", f.kind);
    r.read("step", f.step);
    r.read("factor", f.factor);
    r.finish();
    faults.push_back(f);
  }
}

void parse_top(const json& j, const std::string& source, TrainConfig& c) {
  ObjectReader r(j, "", source);
  r.read("run_id", c.run_id);
  r.read("device", c.device);
  r.read("threads", c.threads);
  r.read("seed", c.seed);
  r.read("steps", c.steps);
  r.read("batch", c.batch);
  r.read("eval_every", c.eval_every);
  r.read("log_every", c.log_every);
  r.read_object("model", [&](const json& v, const std::string& p) { parse_model(v, p, source, c.model); });
  r.read_object("data", [&](const json& v, const std::string& p) { parse_data(v, p, source, c.data); });
  r.read("optimizer", c.optimizer);
  r.read("lr", c.lr);
  r.read("momentum", c.momentum);
  r.read("nesterov", c.nesterov);
  r.read("lr_schedule", c.lr_schedule);
  r.read("lr_step_every", c.lr_step_every);
  r.read("lr_step_gamma", c.lr_step_gamma);
  r.read("lr_warmup_steps", c.lr_warmup_steps);
  r.read_object("clip", [&](const json& v, const std::string& p) { parse_clip(v, p, source, c.clip); });
  r.read("checkpoint_every", c.checkpoint_every);
  r.read("checkpoint_dir", c.checkpoint_dir);
  r.read("monitor", c.monitor);
  r.read("no_monitor", c.no_monitor);
  r.read("mode", c.mode);
  r.read("gate_timeout_ms", c.gate_timeout_ms);
  r.read_object("faults", [&](const json& v, const std::string&) { parse_faults(v, source, c.faults); });
  r.read("scenario", c.scenario);
  r.read("summary_json", c.summary_json);
  r.read("trace_csv", c.trace_csv);
  r.read("spool", c.spool);
  r.finish();
}

}  // namespace

TrainConfig ParseConfigJson(const std::string& json_text, const std::string& source_name) {
  json j;
  try {
    j = json::parse(json_text, /*cb=*/nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(source_name + ": invalid JSON: " + e.what());
  }
  TrainConfig config;
  parse_top(j, source_name, config);
  return config;
}

std::string ToJson(const TrainConfig& c) {
  const SyntheticOptions& s = c.data.synthetic;
  ordered_json faults = ordered_json::array();
  for (const FaultConfig& f : c.faults) {
    faults.push_back({{"kind", f.kind}, {"step", f.step}, {"factor", f.factor}});
  }
  const ordered_json j = {
      {"run_id", c.run_id}, {"device", c.device}, {"threads", c.threads}, {"seed", c.seed},
      {"steps", c.steps}, {"batch", c.batch}, {"eval_every", c.eval_every},
      {"log_every", c.log_every},
      {"model", {{"depth", c.model.depth}, {"base", c.model.base}}},
      {"data", {{"dir", c.data.dir}, {"augment", c.data.augment},
                {"val_fraction", s.val_fraction}, {"seed", s.seed}, {"images", s.images},
                {"size", s.size}, {"channels", s.channels},
                {"foreground_fraction", s.foreground_fraction}, {"noise", s.noise}}},
      {"optimizer", c.optimizer}, {"lr", c.lr}, {"momentum", c.momentum},
      {"nesterov", c.nesterov}, {"lr_schedule", c.lr_schedule},
      {"lr_step_every", c.lr_step_every}, {"lr_step_gamma", c.lr_step_gamma},
      {"lr_warmup_steps", c.lr_warmup_steps},
      {"clip", {{"kind", c.clip.kind}, {"threshold", c.clip.threshold}}},
      {"checkpoint_every", c.checkpoint_every}, {"checkpoint_dir", c.checkpoint_dir},
      {"monitor", c.monitor}, {"no_monitor", c.no_monitor}, {"mode", c.mode},
      {"gate_timeout_ms", c.gate_timeout_ms}, {"faults", faults}, {"scenario", c.scenario},
      {"summary_json", c.summary_json}, {"trace_csv", c.trace_csv}, {"spool", c.spool}};
  return j.dump(2);
}

std::vector<FaultConfig> EffectiveFaults(const TrainConfig& config) {
  if (config.scenario != "seed") return config.faults;
  // The case: one step whose gradient is 1000x too large, after the model is healthy.
  return {FaultConfig{"grad_spike", config.steps * 7 / 12, 1000.0}};
}

namespace {

// The schedule's rate, without the warm-up.
double ScheduleOnly(const TrainConfig& config, int64_t step) {
  if (config.lr_schedule == "cosine") {
    const double t = static_cast<double>(std::clamp<int64_t>(step, 0, config.steps)) /
                     static_cast<double>(std::max<int64_t>(config.steps, 1));
    return config.lr * 0.5 * (1.0 + std::cos(kPi * t));
  }
  if (config.lr_schedule == "step" && config.lr_step_every > 0) {
    return config.lr * std::pow(config.lr_step_gamma, static_cast<double>(step / config.lr_step_every));
  }
  return config.lr;
}

}  // namespace

double ScheduledLr(const TrainConfig& config, int64_t step) {
  const double warmup = config.lr_warmup_steps > 0 && step < config.lr_warmup_steps
                            ? static_cast<double>(step + 1) / static_cast<double>(config.lr_warmup_steps)
                            : 1.0;
  return warmup * ScheduleOnly(config, step);
}

int64_t ValidationCount(int64_t items, double val_fraction) {
  return std::llround(static_cast<double>(items) * val_fraction);
}

bool MonitorEnabled(const TrainConfig& config) {
  return !config.no_monitor && !config.monitor.empty();
}

}  // namespace gradwatch::train
