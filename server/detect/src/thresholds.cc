#include "gradwatch/detect/thresholds.h"

#include <cmath>
#include <limits>

#include "format.h"
#include "gradwatch/common/printable.h"
#include "gradwatch/common/run_id.h"
#include "gradwatch/common/suggest.h"

namespace gradwatch::detect {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One overridable field: a double or a count, with its valid range.
struct Field {
  const char* name;
  double Thresholds::*real;
  uint64_t Thresholds::*count;
  double lo, hi;
};

Field Real(const char* name, double Thresholds::*p, double lo, double hi) {
  return {name, p, nullptr, lo, hi};
}
Field Count(const char* name, uint64_t Thresholds::*p, double lo) {
  return {name, nullptr, p, lo, 1e9};
}

std::vector<Field> Fields() {
  using T = Thresholds;
  return {
      Real("spike_alpha", &T::spike_alpha, 0, 1),
      Real("spike_var_alpha", &T::spike_var_alpha, 0, 1),
      Count("spike_warmup", &T::spike_warmup, 0),
      Real("spike_z_warning", &T::spike_z_warning, 0, kInf),
      Real("spike_z_critical", &T::spike_z_critical, 0, kInf),
      Real("spike_max_ratio", &T::spike_max_ratio, 1, kInf),
      Real("spike_max_decay", &T::spike_max_decay, 0, 1),
      Real("spike_std_floor", &T::spike_std_floor, 0, kInf),
      Real("spike_crit_min_ratio", &T::spike_crit_min_ratio, 1, kInf),
      Real("spike_young_ratio", &T::spike_young_ratio, 1, kInf),
      Real("spike_prior_std", &T::spike_prior_std, 0, kInf),
      Real("spike_prior_weight", &T::spike_prior_weight, 0, kInf),
      Real("loss_spike_ratio", &T::loss_spike_ratio, 1, kInf),
      Real("loss_spike_critical_ratio", &T::loss_spike_critical_ratio, 1, kInf),
      Real("loss_z", &T::loss_z, 0, kInf),
      Real("loss_z_min", &T::loss_z_min, 0, kInf),
      Real("loss_std_floor", &T::loss_std_floor, 0, kInf),
      Real("loss_abs_jump", &T::loss_abs_jump, 0, kInf),
      Real("div_alpha", &T::div_alpha, 0, 1),
      Real("div_margin", &T::div_margin, 0, kInf),
      Count("div_window", &T::div_window, 1),
      Real("div_floor", &T::div_floor, 0, kInf),
      Count("div_trend_window", &T::div_trend_window, 1),
      Real("div_trend_t", &T::div_trend_t, 0, kInf),
      Real("div_trend_short_t", &T::div_trend_short_t, 0, kInf),
      Real("div_trend_min_rate", &T::div_trend_min_rate, 0, kInf),
      Real("div_double", &T::div_double, 1, kInf),
      Real("collapse_eps", &T::collapse_eps, 0, 1),
      Real("collapse_departure", &T::collapse_departure, 0, 1),
      Real("collapse_flat_rtol", &T::collapse_flat_rtol, 0, 1),
      Real("collapse_jaccard_eps", &T::collapse_jaccard_eps, 0, 1),
      Real("collapse_grad_eps", &T::collapse_grad_eps, 0, kInf),
      Count("collapse_window", &T::collapse_window, 1),
      Count("collapse_short_window", &T::collapse_short_window, 1),
      Real("vanish_ratio", &T::vanish_ratio, 0, 1),
      Count("vanish_window", &T::vanish_window, 1),
      Real("dead_ratio", &T::dead_ratio, 0, 1),
      Count("dead_window", &T::dead_window, 1),
      Count("dead_horizon", &T::dead_horizon, 0),
      Real("update_abs_critical", &T::update_abs_critical, 0, kInf),
      Real("update_jump", &T::update_jump, 1, kInf),
      Real("lr_jump_warning", &T::lr_jump_warning, 1, kInf),
      Real("lr_jump_critical", &T::lr_jump_critical, 1, kInf),
      Count("lr_accept_after", &T::lr_accept_after, 1),
      Count("progress_window", &T::progress_window, 1),
      Real("progress_min_drop", &T::progress_min_drop, 0, 1),
      Count("data_spikes", &T::data_spikes, 1),
      Count("data_window", &T::data_window, 1),
      Real("val_collapse_fraction", &T::val_collapse_fraction, 0, 1),
      Real("val_min_best", &T::val_min_best, 0, 1),
      Real("attr_z", &T::attr_z, 0, kInf),
      Count("attr_lookback", &T::attr_lookback, 0),
      Count("incident_gap", &T::incident_gap, 0),
      Count("snapshot_every", &T::snapshot_every, 0),
      Count("snapshots_kept", &T::snapshots_kept, 1),
      Real("rank_departure_ratio", &T::rank_departure_ratio, 1, kInf),
      Real("rank_departure_self", &T::rank_departure_self, 1, kInf),
      Real("rank_loss_departure", &T::rank_loss_departure, 0, kInf),
      Real("rank_loss_ratio", &T::rank_loss_ratio, 1, kInf),
      Real("straggler_ratio", &T::straggler_ratio, 1, kInf),
      Count("straggler_steps", &T::straggler_steps, 1),
      Real("straggler_min_seconds", &T::straggler_min_seconds, 0, kInf),
      Real("hang_min_seconds", &T::hang_min_seconds, 0, kInf),
      Real("hang_factor", &T::hang_factor, 0, kInf),
      Real("hang_heartbeat_seconds", &T::hang_heartbeat_seconds, 0, kInf),
      Count("rank_lag_steps", &T::rank_lag_steps, 1),
      Real("rank_lost_seconds", &T::rank_lost_seconds, 0, kInf),
      Real("rank_join_seconds", &T::rank_join_seconds, 0, kInf),
  };
}

// Sets a scalar's limit ("scalar_max.NAME", "scalar_min.NAME") on t; false if key is none.
bool SetScalarLimit(Thresholds& t, const std::string& key, double v, std::string* error) {
  for (auto [prefix, limits] : {std::pair{"scalar_max.", &t.scalar_max}, std::pair{"scalar_min.", &t.scalar_min}}) {
    const std::string p = prefix;
    if (key.compare(0, p.size(), p) != 0) continue;
    if (key.size() == p.size()) {
      *error = Format("threshold '%s' names no scalar: write %sNAME", key.c_str(), prefix);
    } else if (!ValidScalarName(std::string_view(key).substr(p.size()))) {
      *error = Format("threshold '%s': the scalar name is not %s", Printable(key).c_str(), kScalarNameRule);
    } else if (!std::isfinite(v)) {
      *error = Format("threshold '%s' = %g is not a finite number", key.c_str(), v);
    } else {
      (*limits)[key.substr(p.size())] = v;
    }
    return true;
  }
  return false;
}

// Sets one field on t, or says why not.
std::string Set(Thresholds& t, const std::string& key, double v) {
  if (std::string error; SetScalarLimit(t, key, v, &error)) return error;
  for (const Field& f : Fields()) {
    if (key != f.name) continue;
    if (!(v >= f.lo && v <= f.hi))  // also rejects NaN
      return Format("threshold '%s' = %g is outside [%g, %g]", f.name, v, f.lo, f.hi);
    if (f.real) {
      t.*f.real = v;
    } else if (v != std::floor(v)) {
      return Format("threshold '%s' = %g is not a whole number", f.name, v);
    } else {
      t.*f.count = static_cast<uint64_t>(v);
    }
    return "";
  }
  return Format("unknown threshold '%s'", Printable(key).c_str()) + DidYouMean(key, Thresholds::Names());
}

}  // namespace

Status Thresholds::Apply(const std::map<std::string, double>& overrides) {
  Thresholds next = *this;
  for (const auto& [key, value] : overrides) {
    std::string error = Set(next, key, value);
    if (!error.empty()) return Status::Invalid(error);
  }
  *this = next;
  return {};
}

std::vector<std::string> Thresholds::Names() {
  std::vector<std::string> names;
  for (const Field& f : Fields()) names.push_back(f.name);
  return names;
}

}  // namespace gradwatch::detect
