// bench/detection: gradwatch's detectors against the published stability rules (baselines.h)
// on the same recorded traces. Not a timed test: it prints figures, one JSON line on stdout
// and a table on stderr, and exits 0 whether or not the targets are met.
//
// Usage: detection_bench TRACE_DIR [--verbose]
// TRACE_DIR holds NAME.csv (gradwatch CSV) + NAME.truth.json pairs, as make_traces.sh writes.
//
// Ground truth per trace: the sidecar's event (kind and 1-based step), plus two events derived
// from the trace itself, whatever the sidecar says:
//   collapse   the first step from which the loss stays >= 0.99 x its bound to the end (having
//              been below 0.9 x the bound before), if that lasts >= 20 steps;
//   vanishing  the first step from which the grad norm stays <= 1% of its median over the
//              healthy steps to the end, if that lasts >= 20 steps. The trainer has no knob that
//              makes gradients vanish on their own, so these are the collapses (and settled
//              runs) whose gradients went to ~0: vanishing is derived, not injected.
// A truth event is found when the detector flags within [step, step + tolerance]:
//   explosion 1, nan 1, lr_spike 0 (gated mode must see it before the update), collapse 5,
//   vanishing 10, slow_divergence 60, divergence 300 steps. Divergence's step is the start of
//   the LR ramp (10x per 100 steps): the loss only turns up tens to hundreds of steps later, so
//   its window is wide and its delay counts from the ramp's start; any flag in the window
//   counts, so the baselines' noise flags can "find" a divergence too. Slow divergence's step
//   is where the loss turns up after a gradient ascent starts (the lowest smoothed loss within
//   100 steps of the fault: momentum carries the descent on for ~10-25 steps).
// Which flags count: gradwatch only with events of the kind's family (explosion: grad_spike,
// loss_spike, non_finite; nan: non_finite; lr_spike: lr_jump, update_size; collapse: collapse,
// vanishing, val_collapse; vanishing: vanishing, collapse; divergence and slow_divergence:
// divergence, loss_spike). A baseline flag has no
// kind, so any flag counts, and every baseline is scored on every kind, including those its
// rule cannot see (Keras TerminateOnNaN sees only a non-finite loss: recall 0 elsewhere).
// False events: flags on healthy steps, i.e. every step of a healthy trace and the steps
// before the fault (and before any truth event) of a faulty one. gradwatch counts each event;
// a baseline counts each run of consecutive flagged steps once (one skip/clip/stop episode).
// Baselines have no severity and every flag acts (skip, clip, stop), so all are critical.
// Flags after the first fault that match no truth event count neither way: the run is no
// longer healthy. Precision = found / (found + false events); recall = found / truth events.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gradwatch/detect/baselines.h"
#include "gradwatch/detect/event.h"
#include "gradwatch/detect/replay.h"
#include "gradwatch/detect/thresholds.h"
#include "truth.h"

namespace {

using namespace gradwatch::detect;
using namespace gradwatch::bench;
using nlohmann::json;

// ----- Detectors ----------------------------------------------------------------------------

// One flag: a gradwatch event (kind set) or a step a baseline flagged (kind empty).
struct Flag {
  uint64_t step;
  std::optional<EventKind> kind;
  bool critical;
  bool counts;  // counts as a false event on a healthy step: each event, each episode's start
};

std::vector<Flag> RunGradwatch(const Trace& t) {
  std::vector<Flag> flags;
  for (const Event& e : ReplayOffline(t.records, t.info, Thresholds{}))
    flags.push_back({e.step, e.kind, e.severity == Severity::kCritical, true});
  return flags;
}

std::vector<Flag> RunBaseline(const std::string& name, const Trace& t) {
  std::unique_ptr<Baseline> rule = MakeBaseline(name);
  std::vector<Flag> flags;
  uint64_t previous = 0;
  for (const ReplayRecord& r : t.records) {
    if (!rule->OnStep(r.sample())) continue;
    bool episode = flags.empty() || previous + 1 != r.step.step;
    flags.push_back({r.step.step, std::nullopt, true, episode});
    previous = r.step.step;
  }
  return flags;
}

// ----- Scoring -----------------------------------------------------------------------------

struct KindScore {
  int events = 0;
  int found = 0;
  std::vector<uint64_t> delays;
};

struct Score {
  std::map<Kind, KindScore> kinds;
  int false_events = 0;
  int critical_false_events = 0;
  int healthy_trace_events = 0;  // of the false events, those on healthy traces
  int healthy_trace_critical_events = 0;
};

std::optional<uint64_t> Delay(const std::vector<Flag>& flags, const TruthEvent& truth) {
  for (const Flag& f : flags) {
    if (f.step < truth.step || f.step > truth.step + Tolerance(truth.kind)) continue;
    if (!f.kind || InFamily(truth.kind, *f.kind)) return f.step - truth.step;
  }
  return std::nullopt;
}

void ScoreTrace(const Trace& t, const std::vector<Flag>& flags, Score* score) {
  for (const TruthEvent& truth : t.events) {
    KindScore& k = score->kinds[truth.kind];
    ++k.events;
    if (std::optional<uint64_t> d = Delay(flags, truth)) {
      ++k.found;
      k.delays.push_back(*d);
    }
  }
  for (const Flag& f : flags) {
    if (f.step > t.healthy_until || !f.counts) continue;
    ++score->false_events;
    score->critical_false_events += f.critical;
    score->healthy_trace_events += t.healthy;
    score->healthy_trace_critical_events += t.healthy && f.critical;
  }
}

struct Totals {
  double recall = 0, precision = 0, f1 = 0;
};

Totals Overall(const Score& s) {
  int events = 0, found = 0;
  for (const auto& [kind, k] : s.kinds) {
    events += k.events;
    found += k.found;
  }
  Totals t;
  t.recall = events ? double(found) / events : 0;
  t.precision = found + s.false_events ? double(found) / (found + s.false_events) : 0;
  t.f1 = t.precision + t.recall > 0 ? 2 * t.precision * t.recall / (t.precision + t.recall) : 0;
  return t;
}

double Recall(const KindScore& k) { return k.events ? double(k.found) / k.events : 0; }

double MeanDelay(const KindScore& k) {
  if (k.delays.empty()) return std::nan("");
  double sum = 0;
  for (uint64_t d : k.delays) sum += double(d);
  return sum / double(k.delays.size());
}

std::optional<uint64_t> MaxDelay(const KindScore& k) {
  if (k.delays.empty()) return std::nullopt;
  return *std::max_element(k.delays.begin(), k.delays.end());
}

double Per10k(int n, uint64_t steps) { return steps ? 1e4 * n / double(steps) : 0; }

// ----- Report ------------------------------------------------------------------------------

json KindJson(const KindScore& k) {
  json j = {{"events", k.events}, {"found", k.found}, {"recall", Recall(k)}};
  j["mean_delay"] = k.delays.empty() ? json(nullptr) : json(MeanDelay(k));
  j["max_delay"] = MaxDelay(k) ? json(*MaxDelay(k)) : json(nullptr);
  return j;
}

json ScoreJson(const Score& s, uint64_t healthy_steps) {
  json j;
  for (Kind k : kKinds) j[Name(k)] = KindJson(s.kinds.count(k) ? s.kinds.at(k) : KindScore{});
  Totals t = Overall(s);
  j["false_events"] = s.false_events;
  j["false_events_per_10k"] = Per10k(s.false_events, healthy_steps);
  j["critical_false_events_per_10k"] = Per10k(s.critical_false_events, healthy_steps);
  j["healthy_trace_events"] = s.healthy_trace_events;
  j["healthy_trace_critical_events"] = s.healthy_trace_critical_events;
  j["precision"] = t.precision;
  j["recall"] = t.recall;
  j["f1"] = t.f1;
  return j;
}

const KindScore& Of(const Score& s, Kind k) {
  static const KindScore kNone;
  auto it = s.kinds.find(k);
  return it == s.kinds.end() ? kNone : it->second;
}

bool AllFound(const Score& s, Kind k) {
  auto it = s.kinds.find(k);
  return it == s.kinds.end() || it->second.found == it->second.events;
}

json Targets(const Score& gw, const std::map<std::string, Score>& baselines) {
  double f1 = Overall(gw).f1;
  bool beats = std::all_of(baselines.begin(), baselines.end(),
                           [f1](const auto& b) { return f1 > Overall(b.second).f1; });
  return {{"explosion_within_1_step", AllFound(gw, Kind::kExplosion)},
          {"nan_within_1_step", AllFound(gw, Kind::kNan)},
          {"lr_spike_at_its_step", AllFound(gw, Kind::kLrSpike)},
          {"slow_divergence_within_40_steps",
           AllFound(gw, Kind::kSlowDivergence) && MaxDelay(Of(gw, Kind::kSlowDivergence)).value_or(0) < 40},
          {"collapse_within_5_steps", AllFound(gw, Kind::kCollapse)},
          {"no_critical_events_on_healthy_traces", gw.healthy_trace_critical_events == 0},
          {"no_events_on_healthy_traces", gw.healthy_trace_events == 0},
          {"f1_beats_every_baseline", beats}};
}

std::string Cell(const KindScore& k) {
  char buf[64];
  if (k.delays.empty()) {
    std::snprintf(buf, sizeof buf, "%d/%d", k.found, k.events);
  } else {
    std::snprintf(buf, sizeof buf, "%d/%d (%.1f/%llu)", k.found, k.events, MeanDelay(k),
                  static_cast<unsigned long long>(*MaxDelay(k)));
  }
  return buf;
}

void PrintRow(const std::string& name, const Score& s, uint64_t healthy_steps) {
  std::fprintf(stderr, "%-28s", name.c_str());
  for (Kind k : kKinds)
    std::fprintf(stderr, " %-18s", Cell(s.kinds.count(k) ? s.kinds.at(k) : KindScore{}).c_str());
  Totals t = Overall(s);
  std::fprintf(stderr, " %7.1f %7.1f %5.2f %5.2f %5.2f\n", Per10k(s.false_events, healthy_steps),
               Per10k(s.critical_false_events, healthy_steps), t.precision, t.recall, t.f1);
}

void PrintTable(const Score& gw, const std::map<std::string, Score>& baselines,
                const std::vector<std::string>& order, uint64_t healthy_steps) {
  std::fprintf(stderr, "%-28s", "found/events (delay mean/max)");
  for (Kind k : kKinds) {
    std::string head = std::string(Name(k)) + " ±" + std::to_string(Tolerance(k));
    std::fprintf(stderr, " %-18s", head.c_str());
  }
  std::fprintf(stderr, " %7s %7s %5s %5s %5s\n", "FP/10k", "crit", "P", "R", "F1");
  PrintRow("gradwatch", gw, healthy_steps);
  for (const std::string& name : order) PrintRow(name, baselines.at(name), healthy_steps);
}

// --verbose: each trace's truth events and gradwatch's events, to see what matched.
void PrintTrace(const Trace& t, const std::vector<Flag>& gw) {
  std::fprintf(stderr, "%s (healthy to %llu):", t.name.c_str(),
               static_cast<unsigned long long>(t.healthy_until));
  for (const TruthEvent& e : t.events)
    std::fprintf(stderr, " truth %s@%llu", Name(e.kind), static_cast<unsigned long long>(e.step));
  std::fprintf(stderr, "\n   gradwatch:");
  for (const Flag& f : gw)
    std::fprintf(stderr, " %s%s@%llu", ToString(*f.kind), f.critical ? "!" : "",
                 static_cast<unsigned long long>(f.step));
  std::fprintf(stderr, "\n");
}

int Run(const std::filesystem::path& dir, bool verbose) {
  std::vector<Trace> traces;
  if (std::string error = LoadTraces(dir, &traces); !error.empty()) {
    std::fprintf(stderr, "detection_bench: %s\n", error.c_str());
    return 2;
  }
  std::vector<std::string> order;
  for (const auto& b : MakeBaselines()) order.push_back(b->name());
  Score gw;
  std::map<std::string, Score> baselines;
  uint64_t healthy_steps = 0;
  int healthy_traces = 0;
  std::map<std::string, int> events;
  for (const Trace& t : traces) {
    healthy_steps += t.healthy_until;  // steps are 1-based and contiguous
    healthy_traces += t.healthy;
    for (const TruthEvent& e : t.events) ++events[Name(e.kind)];
    std::vector<Flag> flags = RunGradwatch(t);
    ScoreTrace(t, flags, &gw);
    if (verbose || (t.healthy && !flags.empty())) PrintTrace(t, flags);  // always: healthy ones
    for (const std::string& name : order) ScoreTrace(t, RunBaseline(name, t), &baselines[name]);
  }
  PrintTable(gw, baselines, order, healthy_steps);
  json tolerance;
  for (Kind k : kKinds) tolerance[Name(k)] = Tolerance(k);
  json out = {{"bench", "detection"},         {"traces", traces.size()},
              {"healthy_traces", healthy_traces}, {"healthy_steps", healthy_steps},
              {"events", events},             {"tolerance_steps", tolerance},
              {"gradwatch", ScoreJson(gw, healthy_steps)}};
  for (const std::string& name : order)
    out["baselines"][name] = ScoreJson(baselines[name], healthy_steps);
  out["targets_met"] = Targets(gw, baselines);
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool verbose = argc == 3 && std::strcmp(argv[2], "--verbose") == 0;
  if (argc < 2 || argc > 3 || (argc == 3 && !verbose)) {
    std::fprintf(stderr, "usage: %s TRACE_DIR [--verbose]\n", argv[0]);
    return 2;
  }
  return Run(argv[1], verbose);
}
