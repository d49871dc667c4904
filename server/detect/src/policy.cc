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

Status GuardConfig::Apply(const std::map<std::string, double>& overrides) {
  GuardConfig next = *this;
  for (const auto& [key, value] : overrides) {
    if (!std::isfinite(value)) return Status::Invalid(key + ": must be finite");
    if (key == "max_recoveries" && value >= 0 && value == std::floor(value)) {
      next.max_recoveries = static_cast<int>(value);
    } else if (key == "lr_scale" && value > 0 && value <= 1) {
      next.lr_scale = value;
    } else if (key == "release_after" && value >= 0 && value == std::floor(value) && value <= 1e9) {
      next.release_after = static_cast<int>(value);
    } else if (key == "release_lr" && (value == 0 || value == 1)) {
      next.release_lr = value == 1;
    } else if ((key == "clip_std" || key == "clip_cap" || key == "clip_default") && value > 0) {
      (key == "clip_std" ? next.clip_std : key == "clip_cap" ? next.clip_cap : next.clip_default) = value;
    } else if (key == "max_recoveries" || key == "lr_scale" || key == "clip_std" || key == "clip_cap" ||
               key == "clip_default" || key == "release_after" || key == "release_lr") {
      return Status::Invalid(key + ": " + std::to_string(value) +
                             " is out of range (max_recoveries, release_after: a whole number >= 0; "
                             "lr_scale: (0, 1]; clip_*: > 0; release_lr: 0 or 1)");
    } else {
      return Status::Invalid("unknown policy key \"" + key +
                             "\", expected max_recoveries, lr_scale, clip_std, clip_cap, clip_default, "
                             "release_after or release_lr");
    }
  }
  *this = next;
  return {};
}

GuardPolicy::GuardPolicy(Mode mode, GuardConfig config) : mode_(mode), config_(config) {}

std::vector<Action> GuardPolicy::OnEvent(const Event& e, const HealthyStats& h) {
  if (mode_ == Mode::kObserve || stopped_) return {};
  switch (e.kind) {
    case EventKind::kGradSpike: return OnSpike(e, h);
    case EventKind::kNonFinite: return OnNonFinite(e);
    case EventKind::kCollapse:
    case EventKind::kValCollapse: return OnCollapse(e, h);
    case EventKind::kVanishing: return e.cause_step != 0 ? OnCollapse(e, h) : std::vector<Action>{};
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
  LowerLr(why, &out);
  return out;
}

// One response per incident: a collapse and the validation collapse it causes are one failure.
std::vector<Action> GuardPolicy::OnCollapse(const Event& e, const HealthyStats& h) {
  std::vector<Action> out;
  if (e.incident_id != 0 && e.incident_id == last_collapse_incident_) return out;
  last_collapse_incident_ = e.incident_id;
  if (!Recover(e, &out)) return out;
  std::string why = Format("%s at step %llu", detect::ToString(e.kind), Ull(e.step));
  if (e.cause_step != 0) {
    why = Format("dead network at step %llu after the violent event at step %llu", Ull(e.step),
                 Ull(e.cause_step));
    out.push_back({Kind::kRollback, static_cast<double>(e.cause_step - 1),
                   why + ": roll back to before that event"});
  } else {
    out.push_back({Kind::kRollback, 0, why + ": roll back to the last healthy checkpoint"});
  }
  Clip(h, why + ": clip the gradient norm", &out);
  LowerLr(why, &out);
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
  clipping_ = policy_clip_ = true;
  clip_cause_ = why;
  quiet_steps_ = 0;
  out->push_back({Kind::kClipNorm, ClipThreshold(h), why});
}

void GuardPolicy::LowerLr(const std::string& why, std::vector<Action>* out) {
  lr_factor_ *= config_.lr_scale;
  out->push_back({Kind::kScaleLr, config_.lr_scale, why + ": lower the learning rate"});
}

// After release_after quiet steps: the policy's clipping goes off, and its learning-rate cut is
// undone if it was the run's only recovery (after a second one the lower rate is evidently needed).
std::vector<Action> GuardPolicy::OnStep(uint64_t step, bool quiet) {
  quiet_steps_ = quiet ? quiet_steps_ + 1 : 0;
  std::vector<Action> out;
  if (mode_ == Mode::kObserve || stopped_ || config_.release_after <= 0 ||
      quiet_steps_ != static_cast<uint64_t>(config_.release_after)) {
    return out;
  }
  std::string quiet_for = Format("no event for %llu steps up to step %llu", Ull(quiet_steps_), Ull(step));
  if (policy_clip_) {
    clipping_ = policy_clip_ = false;
    out.push_back({Kind::kClipOff, 0,
                   quiet_for + ": clipping released (it went on for: " + clip_cause_ + ")"});
  }
  if (lr_factor_ < 1 && config_.release_lr && recoveries_ <= 1) {
    out.push_back({Kind::kScaleLr, 1 / lr_factor_,
                   quiet_for + Format(": learning rate restored (x%.3g) after one recovery", 1 / lr_factor_)});
    lr_factor_ = 1;
  }
  return out;
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
    return {Verdict::kSkip, 0, 1, Format("non-finite values at step %llu: update skipped", Ull(s.step))};
  return Veto(s, events_of_this_step, h);
}

// The first critical event that calls for a veto decides, in this order of preference: the
// learning rate (the update at the rate's level is still useful), the update's size, the
// gradient (clipped).
GuardPolicy::Verdict GuardPolicy::Veto(const detect::StepSample& s, const std::vector<Event>& events,
                                       const HealthyStats& h) const {
  Verdict clip;
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    if (e.severity != Severity::kCritical) continue;
    int index = static_cast<int>(i);
    if (e.kind == EventKind::kLrJump && e.value > 1) {
      return {Verdict::kScaleLr, 0, 1 / e.value,
              Format("learning rate %.3g jumped %.3gx at step %llu: update applied at %.3g instead "
                     "(gated veto)",
                     s.learning_rate, e.value, Ull(s.step), s.learning_rate / e.value),
              index};
    }
    if (e.kind == EventKind::kUpdateSize)
      return {Verdict::kSkip, 0, 1,
              Format("oversized update at step %llu: update skipped (gated veto)", Ull(s.step)), index};
    if (e.kind == EventKind::kGradSpike && clip.d == Verdict::kProceed)
      clip = {Verdict::kClip, ClipThreshold(h), 1,
              Format("critical grad spike at step %llu: update clipped", Ull(s.step)), index};
  }
  return clip;
}

}  // namespace gradwatch::policy
