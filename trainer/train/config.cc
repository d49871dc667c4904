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

#include "gradwatch/common/name_value.h"

namespace gradwatch::train {
namespace {

constexpr double kPi = 3.14159265358979323846;

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// Reads the fields of one JSON object into a struct, one Read() per field, and remembers which keys
// it consumed so that Finish() can reject the rest. `prefix` ("", "model.", "faults[0].") names
// nested fields in messages.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string prefix, const std::string& source)
      : object_(object), prefix_(std::move(prefix)), source_(source) {
    if (!object_.is_object()) {
      Fail(prefix_.empty() ? "the top level" : Field(""), "a JSON object", &object_);
    }
  }

  template <typename T>
  void Read(const std::string& key, T& out) {
    known_.insert(key);
    const auto it = object_.find(key);
    if (it == object_.end()) return;
    Convert(*it, key, out);
  }

  // Calls `parse(value, prefix)` on the object under `key`, if present.
  template <typename F>
  void ReadObject(const std::string& key, F parse) {
    known_.insert(key);
    const auto it = object_.find(key);
    if (it != object_.end()) parse(*it, prefix_ + key + ".");
  }

  void Finish() const {
    for (const auto& item : object_.items()) {
      if (known_.count(item.key()) == 0) {
        throw std::runtime_error(source_ + ": unknown field \"" + prefix_ + item.key() + "\"");
      }
    }
  }

  [[noreturn]] void Fail(const std::string& what, const std::string& expected,
                         const json* got = nullptr) const {
    std::string message = source_ + ": " + what + ": expected " + expected;
    if (got != nullptr) message += ", got " + std::string(got->type_name());
    throw std::runtime_error(message);
  }

 private:
  std::string Field(const std::string& key) const {
    const std::string name = prefix_ + key;
    return name.empty() || name.back() != '.' ? name : name.substr(0, name.size() - 1);
  }

  void Convert(const json& v, const std::string& key, std::string& out) const {
    if (!v.is_string()) Fail(Field(key), "a string", &v);
    out = v.get<std::string>();
  }
  void Convert(const json& v, const std::string& key, bool& out) const {
    if (!v.is_boolean()) Fail(Field(key), "true or false", &v);
    out = v.get<bool>();
  }
  void Convert(const json& v, const std::string& key, double& out) const {
    if (!v.is_number()) Fail(Field(key), "a number", &v);
    out = v.get<double>();
  }
  void Convert(const json& v, const std::string& key, uint64_t& out) const {
    if (!v.is_number_unsigned()) Fail(Field(key), "a non-negative integer", &v);
    out = v.get<uint64_t>();
  }
  void Convert(const json& v, const std::string& key, std::map<std::string, double>& out) const {
    if (!v.is_object()) Fail(Field(key), "an object of NAME: number", &v);
    out.clear();
    for (const auto& item : v.items()) {
      if (!item.value().is_number()) Fail(Field(key) + "." + item.key(), "a number", &item.value());
      out[item.key()] = item.value().get<double>();
    }
  }
  template <typename Int>
  void Convert(const json& v, const std::string& key, Int& out) const {
    static_assert(std::is_integral_v<Int> && std::is_signed_v<Int>);
    if (!v.is_number_integer()) Fail(Field(key), "an integer", &v);
    // A huge unsigned value would wrap in get<int64_t>(); range-check first.
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<Int>::max())) {
      Fail(Field(key), "an integer in range");
    }
    const int64_t wide = v.get<int64_t>();
    if (wide < std::numeric_limits<Int>::min() || wide > std::numeric_limits<Int>::max()) {
      Fail(Field(key), "an integer in range");
    }
    out = static_cast<Int>(wide);
  }

  const json& object_;
  std::string prefix_;
  const std::string& source_;
  std::set<std::string> known_;
};

void ParseModel(const json& j, const std::string& prefix, const std::string& source,
                 ModelConfig& m) {
  ObjectReader r(j, prefix, source);
  r.Read("depth", m.depth);
  r.Read("base", m.base);
  r.Finish();
}

void ParseData(const json& j, const std::string& prefix, const std::string& source,
                DataConfig& d) {
  ObjectReader r(j, prefix, source);
  r.Read("dir", d.dir);
  r.Read("augment", d.augment);
  r.Read("val_fraction", d.synthetic.val_fraction);
  r.Read("seed", d.synthetic.seed);
  r.Read("images", d.synthetic.images);
  r.Read("size", d.synthetic.size);
  r.Read("channels", d.synthetic.channels);
  r.Read("foreground_fraction", d.synthetic.foreground_fraction);
  r.Read("noise", d.synthetic.noise);
  r.Finish();
}

void ParseClip(const json& j, const std::string& prefix, const std::string& source,
                ClipConfig& c) {
  ObjectReader r(j, prefix, source);
  r.Read("kind", c.kind);
  r.Read("threshold", c.threshold);
  r.Finish();
}

void ParseFaults(const json& j, const std::string& source, std::vector<FaultConfig>& faults) {
  if (!j.is_array()) {
    throw std::runtime_error(source + ": faults: expected an array, got " + j.type_name());
  }
  faults.clear();
  for (size_t i = 0; i < j.size(); ++i) {
    FaultConfig f;
    ObjectReader r(j[i], "faults[" + std::to_string(i) + "].", source);
    r.Read("kind", f.kind);
    r.Read("step", f.step);
    r.Read("factor", f.factor);
    r.Read("rank", f.rank);
    r.Read("seconds", f.seconds);
    r.Read("count", f.count);
    r.Finish();
    faults.push_back(f);
  }
}

void ParseTop(const json& j, const std::string& source, TrainConfig& c) {
  ObjectReader r(j, "", source);
  r.Read("run_id", c.run_id);
  r.Read("device", c.device);
  r.Read("threads", c.threads);
  r.Read("seed", c.seed);
  r.Read("steps", c.steps);
  r.Read("batch", c.batch);
  r.Read("eval_every", c.eval_every);
  r.Read("log_every", c.log_every);
  r.ReadObject("model", [&](const json& v, const std::string& p) { ParseModel(v, p, source, c.model); });
  r.ReadObject("data", [&](const json& v, const std::string& p) { ParseData(v, p, source, c.data); });
  r.Read("optimizer", c.optimizer);
  r.Read("lr", c.lr);
  r.Read("momentum", c.momentum);
  r.Read("nesterov", c.nesterov);
  r.Read("lr_schedule", c.lr_schedule);
  r.Read("lr_step_every", c.lr_step_every);
  r.Read("lr_step_gamma", c.lr_step_gamma);
  r.Read("lr_warmup_steps", c.lr_warmup_steps);
  r.ReadObject("clip", [&](const json& v, const std::string& p) { ParseClip(v, p, source, c.clip); });
  r.Read("checkpoint_every", c.checkpoint_every);
  r.Read("checkpoint_dir", c.checkpoint_dir);
  r.Read("monitor", c.monitor);
  r.Read("no_monitor", c.no_monitor);
  r.Read("mode", c.mode);
  r.Read("gate_timeout_ms", c.gate_timeout_ms);
  r.ReadObject("faults", [&](const json& v, const std::string&) { ParseFaults(v, source, c.faults); });
  r.Read("scenario", c.scenario);
  r.Read("summary_json", c.summary_json);
  r.Read("trace_csv", c.trace_csv);
  r.Read("spool", c.spool);
  r.Read("thresholds", c.thresholds);
  r.Finish();
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
  ParseTop(j, source_name, config);
  return config;
}

std::string ToJson(const TrainConfig& c) {
  const SyntheticOptions& s = c.data.synthetic;
  ordered_json faults = ordered_json::array();
  for (const FaultConfig& f : c.faults) {
    faults.push_back({{"kind", f.kind}, {"step", f.step}, {"factor", f.factor}, {"rank", f.rank},
                      {"seconds", f.seconds}, {"count", f.count}});
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
      {"summary_json", c.summary_json}, {"trace_csv", c.trace_csv}, {"spool", c.spool},
      {"thresholds", c.thresholds}};
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

std::pair<std::string, double> ParseThresholdFlag(const std::string& item) {
  std::pair<std::string, double> out;
  if (!ParseNameValue(item, &out.first, &out.second)) {
    throw std::invalid_argument(ThresholdFlagError(item));
  }
  return out;
}

FaultConfig ParseFaultFlag(const std::string& spec) {
  const auto fail = [&](const std::string& why) { return std::invalid_argument("--fault \"" + spec + "\": " + why); };
  const auto number = [&](const std::string& key, const std::string& value, bool integer) {
    size_t used = 0;
    double v = 0;
    try {
      v = integer ? static_cast<double>(std::stoll(value, &used)) : std::stod(value, &used);
    } catch (const std::exception&) {
      used = std::string::npos;
    }
    if (used != value.size() || value.empty()) {
      throw fail(key + ": expected " + (integer ? "an integer" : "a number") + ", got \"" + value + "\"");
    }
    return v;
  };
  FaultConfig f;
  const size_t at = spec.find('@');
  if (at == std::string::npos || at == 0) throw fail("expected KIND@STEP[,KEY=VALUE...]");
  f.kind = spec.substr(0, at);
  std::stringstream rest(spec.substr(at + 1));
  std::string item;
  std::getline(rest, item, ',');
  f.step = static_cast<int64_t>(number("STEP", item, true));
  while (std::getline(rest, item, ',')) {
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (eq == std::string::npos) throw fail("expected KEY=VALUE, got \"" + item + "\"");
    if (key == "factor") f.factor = number(key, value, false);
    else if (key == "rank") f.rank = static_cast<int64_t>(number(key, value, true));
    else if (key == "seconds") f.seconds = number(key, value, false);
    else if (key == "count") f.count = static_cast<int64_t>(number(key, value, true));
    else throw fail("unknown key \"" + key + "\", expected factor, rank, seconds or count");
  }
  return f;
}

std::string RankPath(const std::string& path, int rank) {
  if (path.empty() || rank == 0) return path;
  const size_t slash = path.find_last_of('/');
  const size_t name = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = path.find_last_of('.');
  const bool has_ext = dot != std::string::npos && dot > name;  // ".hidden" has none
  const std::string suffix = "-rank" + std::to_string(rank);
  return has_ext ? path.substr(0, dot) + suffix + path.substr(dot) : path + suffix;
}

}  // namespace gradwatch::train
