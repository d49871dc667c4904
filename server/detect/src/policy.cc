#include "gradwatch/detect/policy.h"

#include <algorithm>
#include <cmath>

#include "format.h"

namespace gradwatch::policy {

using detect::Event;
using detect::EventKind;
using detect::Format;
using detect::HealthyStats;
using detect::Severity;
using Kind = Action::Kind;

namespace {

unsigned long long Ull(uint64_t v) {
  return static_cast<unsigned long long>(v);
}

}  // namespace

const char* ToString(Mode mode) {
  switch (mode) {
    case Mode::kObserve: return "observe";
    case Mode::kGuard: return "guard";
    case Mode::kGated: return "gated";
  }
  return "unknown";
}

bool ParseMode(std::string_view name, Mode* mode) {
  for (Mode m : {Mode::kObserve, Mode::kGuard, Mode::kGated}) {
    if (name == ToString(m)) {
      *mode = m;
      return true;
    }
  }
  return false;
}

const char* ToString(Action::Kind kind) {
  switch (kind) {
    case Kind::kClipNorm: return "clip_norm";
    case Kind::kClipValue: return "clip_value";
    case Kind::kClipAdaptive: return "clip_adaptive";
    case Kind::kClipOff: return "clip_off";
    case Kind::kScaleLr: return "scale_lr";
    case Kind::kSkip: return "skip";
    case Kind::kRollback: return "rollback";
    case Kind::kStop: return "stop";
  }
  return "unknown";
}

std::string GuardConfig::Apply(const std::map<std::string, double>& overrides) {
  GuardConfig next = *this;
  for (const auto& [key, value] : overrides) {
    if (!std::isfinite(value)) return key + ": must be finite";
    if (key == "max_recoveries" && value >= 0 && value == std::floor(value)) {
      next.max_recoveries = static_cast<int>(value);
    } else if (key == "lr_scale" && value > 0 && value <= 1) {
      next.lr_scale = value;
    } else if ((key == "clip_std" || key == "clip_cap" || key == "clip_default") && value > 0) {
      (key == "clip_std" ? next.clip_std : key == "clip_cap" ? next.clip_cap : next.clip_default) = value;
    } else if (key == "max_recoveries" || key == "lr_scale" || key == "clip_std" || key == "clip_cap" ||
               key == "clip_default") {
      return key + ": " + std::to_string(value) +
             " is out of range (max_recoveries: a whole number >= 0; lr_scale: (0, 1]; clip_*: > 0)";
    } else {
      return "unknown policy key \"" + key +
             "\", expected max_recoveries, lr_scale, clip_std, clip_cap or clip_default";
    }
  }
  *this = next;
  return "";
}

GuardPolicy::GuardPolicy(Mode mode, GuardConfig config) : mode_(mode), config_(config) {}

std::vector<Action> GuardPolicy::OnEvent(const Event& e, const HealthyStats& h) {
  if (mode_ == Mode::kObserve || stopped_) return {};
  switch (e.kind) {
    case EventKind::kGradSpike: return OnSpike(e, h);
    case EventKind::kNonFinite: return OnNonFinite(e);
    case EventKind::kCollapse:
    case EventKind::kValCollapse: return OnCollapse(e, h);
    default: return {};
  }
}

std::vector<Action> GuardPolicy::OnSpike(const Event& e, const HealthyStats& h) {
  std::vector<Action> out;
  if (e.severity == Severity::kCritical)
    Clip(h, Format("critical grad spike at step %llu: %s", Ull(e.step), e.message.c_str()), &out);
  return out;
}

// Gated mode already skipped the update (OnGatedStep), so nothing bad landed: no rollback.
std::vector<Action> GuardPolicy::OnNonFinite(const Event& e) {
  std::vector<Action> out;
  if (!Recover(e, &out) || mode_ == Mode::kGated) return out;
  std::string why = Format("non-finite values at step %llu", Ull(e.step));
  out.push_back({Kind::kRollback, 0, why + ": roll back to the last healthy checkpoint"});
  out.push_back({Kind::kScaleLr, config_.lr_scale, why + ": lower the learning rate"});
  return out;
}

// One response per incident: a collapse and the validation collapse it causes are one failure.
std::vector<Action> GuardPolicy::OnCollapse(const Event& e, const HealthyStats& h) {
  std::vector<Action> out;
  if (e.incident_id != 0 && e.incident_id == last_collapse_incident_) return out;
  last_collapse_incident_ = e.incident_id;
  if (!Recover(e, &out)) return out;
  std::string why = Format("%s at step %llu", detect::ToString(e.kind), Ull(e.step));
  out.push_back({Kind::kRollback, 0, why + ": roll back to the last healthy checkpoint"});
  Clip(h, why + ": clip the gradient norm", &out);
  out.push_back({Kind::kScaleLr, config_.lr_scale, why + ": lower the learning rate"});
  return out;
}

// Counts one recovery; past the budget, stops the run instead and returns false.
bool GuardPolicy::Recover(const Event& e, std::vector<Action>* out) {
  if (++recoveries_ <= config_.max_recoveries) return true;
  stopped_ = true;
  out->push_back({Kind::kStop, 0,
                  Format("%s at step %llu after %d recoveries: stopping the run",
                         detect::ToString(e.kind), Ull(e.step), config_.max_recoveries)});
  return false;
}

void GuardPolicy::Clip(const HealthyStats& h, const std::string& why, std::vector<Action>* out) {
  if (clipping_) return;
  clipping_ = true;
  out->push_back({Kind::kClipNorm, ClipThreshold(h), why});
}

double GuardPolicy::ClipThreshold(const HealthyStats& h) const {
  if (!h.warmed_up || !(h.grad_norm_mean > 0)) return config_.clip_default;
  double t = std::max(h.grad_norm_mean + config_.clip_std * h.grad_norm_std, h.grad_norm_max);
  return std::min(t, config_.clip_cap * h.grad_norm_mean);
}

GuardPolicy::Verdict GuardPolicy::OnGatedStep(const detect::StepSample& s,
                                              const std::vector<Event>& events_of_this_step,
                                              const HealthyStats& h) {
  if (mode_ != Mode::kGated || stopped_) return {};
  bool finite = std::isfinite(s.loss) && (!s.has_grad_norm || std::isfinite(s.grad_norm));
  if (!finite)
    return {Verdict::kSkip, 0,
            Format("non-finite values at step %llu: update skipped", Ull(s.step))};
  for (const Event& e : events_of_this_step) {
    if (e.kind == EventKind::kGradSpike && e.severity == Severity::kCritical)
      return {Verdict::kClip, ClipThreshold(h),
              Format("critical grad spike at step %llu: update clipped", Ull(s.step))};
  }
  return {};
}

}  // namespace gradwatch::policy
