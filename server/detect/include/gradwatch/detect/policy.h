// What the monitor does about events. A run's mode decides whether anything is done: observe
// (events and alerts only), guard (automatic actions, the default), gated (guard plus a verdict on
// each update before it lands). The default guard policy follows DESIGN.md:
//   critical grad spike -> switch on global-norm clipping at a threshold from the healthy
//                          statistics (once; not re-issued while on), released (switched off)
//                          after release_after quiet steps (OnStep), with the learning rate
//                          after a single recovery (release_lr);
//   non-finite          -> gated: skip the update (OnGatedStep); guard: roll back and halve the LR;
//   collapse, val collapse, a dead network after a violent event (vanishing with cause_step)
//                       -> roll back (to before the cause, if named), clip, halve the LR (once
//                          per incident);
//   gated mode, before the update: a critical learning-rate jump runs at the rate's level
//                          (the LR is clamped for that step), a critical oversized update
//                          without one is skipped, a critical grad spike is clipped;
//   after max_recoveries rollbacks (or skipped non-finite episodes) the next one stops the run.
// Other events (warnings, loss spikes, divergence, plain vanishing, no progress, data suspects)
// only alert. Not thread-safe.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gradwatch/common/status.h"

#include "gradwatch/detect/event.h"

namespace gradwatch::policy {

enum class Mode { kObserve, kGuard, kGated };
const char* ToString(Mode mode);  // "observe", "guard", "gated"
// Parses those names; false for anything else.
bool ParseMode(std::string_view name, Mode* mode);

struct Action {
  enum class Kind {
    kClipNorm,
    kClipValue,
    kClipAdaptive,
    kClipOff,
    kScaleLr,
    kSkip,
    kRollback,
    kStop
  };
  Kind kind = Kind::kStop;
  double value = 0;  // clip threshold for the clip kinds, LR factor for kScaleLr, else 0
  std::string reason;
};
// "clip_norm", "clip_value", "clip_adaptive", "clip_off", "scale_lr", "skip", "rollback", "stop".
const char* ToString(Action::Kind kind);

struct GuardConfig {
  int max_recoveries = 3;   // rollbacks / skipped non-finite episodes before stopping (DESIGN.md)
  double lr_scale = 0.5;    // "halve the LR"
  double clip_std = 3;      // clip at max(healthy mean + 3 std, healthy recent max)...
  double clip_cap = 5;      // ...at most 5x the healthy mean (healthy norm 0.2 -> clip <= 1.0)
  double clip_default = 1;  // when no healthy statistics yet: the case's accepted fix, clipnorm=1
  // Clipping the policy switched on is switched off after this many consecutive steps without
  // an event: a false alarm must not cost the rest of the run (a run clipped at 0.09 for 500
  // steps trained 7.6x slower). 0 = keep it on. gradwatch.
  int release_after = 200;
  // At that point a learning-rate cut of the policy's is undone too, if it was the run's only
  // recovery (1), or never (0).
  bool release_lr = true;

  // Applies overrides by name (the fields above); all or nothing. An error is kInvalidArgument
  // and names the unknown key or bad value.
  Status Apply(const std::map<std::string, double>& overrides);
};

class GuardPolicy {
 public:
  explicit GuardPolicy(Mode mode, GuardConfig config = {});

  // Actions for one event (already assigned to an incident, if incidents are tracked). Empty in
  // observe mode and after a stop.
  std::vector<Action> OnEvent(const detect::Event& e, const detect::HealthyStats& h);

  struct Verdict {
    enum Decision { kProceed, kSkip, kClip, kScaleLr } d = kProceed;
    double clip = 0;      // the global-norm threshold for kClip
    double lr_scale = 1;  // kScaleLr: multiply this step's learning rate by this (< 1)
    std::string reason;
    int event = -1;  // the index in events_of_this_step of the event that decided, -1 = none
  };
  // Gated mode: the verdict on one update before it lands, given that step's events. Skips a
  // non-finite update; runs a critical learning-rate jump at the rate's level (kScaleLr: 1 /
  // the jump); skips a critical oversized update; clips an update that raised a critical grad
  // spike. Always kProceed in other modes.
  Verdict OnGatedStep(const detect::StepSample& s,
                      const std::vector<detect::Event>& events_of_this_step,
                      const detect::HealthyStats& h);

  // After each step's events: the actions due because the run has been quiet (the release of
  // clipping the policy switched on). quiet: the step raised no event.
  std::vector<Action> OnStep(uint64_t step, bool quiet);

  // Clipping was switched on or off (by a command); the policy will not re-issue clipping while
  // on, and releases only clipping it switched on itself (by_policy).
  void NoteClipping(bool on, bool by_policy = false) {
    clipping_ = on;
    policy_clip_ = on && by_policy;
  }
  Mode mode() const { return mode_; }
  bool clipping() const { return clipping_; }
  bool stopped() const { return stopped_; }
  // The global-norm clip threshold policy derives from h.
  double ClipThreshold(const detect::HealthyStats& h) const;

 private:
  std::vector<Action> OnSpike(const detect::Event& e, const detect::HealthyStats& h);
  std::vector<Action> OnNonFinite(const detect::Event& e);
  std::vector<Action> OnCollapse(const detect::Event& e, const detect::HealthyStats& h);
  Verdict Veto(const detect::StepSample& s, const std::vector<detect::Event>& events,
               const detect::HealthyStats& h) const;
  bool Recover(const detect::Event& e, std::vector<Action>* out);
  void Clip(const detect::HealthyStats& h, const std::string& why, std::vector<Action>* out);
  void LowerLr(const std::string& why, std::vector<Action>* out);

  Mode mode_;
  GuardConfig config_;
  bool clipping_ = false;
  bool policy_clip_ = false;  // the clipping in force is the policy's own
  uint64_t quiet_steps_ = 0;  // consecutive steps without an event
  std::string clip_cause_;    // why the policy's clipping went on
  double lr_factor_ = 1;      // the product of the policy's learning-rate scalings not undone
  bool stopped_ = false;
  int recoveries_ = 0;
  uint64_t last_collapse_incident_ = 0;
};

}  // namespace gradwatch::policy
