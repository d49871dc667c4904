#include "truth.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

namespace gradwatch::bench {

using detect::EventKind;
using detect::ParseResult;
using detect::ReadCsvFile;
using detect::ReplayRecord;
using detect::StepSample;
using nlohmann::json;

const char* Name(Kind k) {
  switch (k) {
    case Kind::kExplosion: return "explosion";
    case Kind::kNan: return "nan";
    case Kind::kLrSpike: return "lr_spike";
    case Kind::kSlowDivergence: return "slow_divergence";
    case Kind::kDivergence: return "divergence";
    case Kind::kCollapse: return "collapse";
    case Kind::kVanishing: return "vanishing";
  }
  return "?";
}

uint64_t Tolerance(Kind k) {
  switch (k) {
    case Kind::kExplosion: return 1;
    case Kind::kNan: return 1;
    case Kind::kLrSpike: return 0;
    case Kind::kSlowDivergence: return 60;
    case Kind::kDivergence: return 300;
    case Kind::kCollapse: return 5;
    case Kind::kVanishing: return 10;
  }
  return 0;
}

bool InFamily(Kind k, EventKind e) {
  switch (k) {
    case Kind::kExplosion:
      return e == EventKind::kGradSpike || e == EventKind::kLossSpike ||
             e == EventKind::kNonFinite;
    case Kind::kNan: return e == EventKind::kNonFinite;
    case Kind::kLrSpike: return e == EventKind::kLrJump || e == EventKind::kUpdateSize;
    case Kind::kSlowDivergence:
    case Kind::kDivergence: return e == EventKind::kDivergence || e == EventKind::kLossSpike;
    case Kind::kCollapse:
      return e == EventKind::kCollapse || e == EventKind::kVanishing ||
             e == EventKind::kValCollapse;
    case Kind::kVanishing: return e == EventKind::kVanishing || e == EventKind::kCollapse;
  }
  return false;
}

namespace {

std::optional<Kind> KindNamed(const std::string& name) {
  for (Kind k : kKinds)
    if (name == Name(k)) return k;
  return std::nullopt;
}

constexpr double kPinned = 0.99;        // collapse: loss >= 0.99 x bound...
constexpr double kDeparted = 0.9;       // ...after having been below 0.9 x bound
constexpr double kVanishRatio = 0.01;   // vanishing: two orders of magnitude below healthy
constexpr uint64_t kMinLasting = 20;    // both must last to the end, at least this many steps

// The first step from which `holds` is true for every record to the end, if that tail has
// at least kMinLasting records.
template <class Pred>
std::optional<uint64_t> LastingFrom(const std::vector<ReplayRecord>& records, Pred holds) {
  size_t i = records.size();
  while (i > 0 && holds(records[i - 1].step)) --i;
  if (records.size() - i < kMinLasting) return std::nullopt;
  return records[i].step.step;
}

std::optional<uint64_t> CollapseStep(const std::vector<ReplayRecord>& records, double bound) {
  auto pinned = [&](const StepSample& s) { return s.loss >= kPinned * bound; };
  std::optional<uint64_t> from = LastingFrom(records, pinned);
  if (!from) return std::nullopt;
  for (const ReplayRecord& r : records)
    if (r.step.step < *from && r.step.loss < kDeparted * bound) return from;
  return std::nullopt;  // never left the bound: nothing learned, nothing collapsed
}

std::optional<uint64_t> VanishingStep(const std::vector<ReplayRecord>& records,
                                      uint64_t healthy_until) {
  std::vector<double> norms;
  for (const ReplayRecord& r : records)
    if (r.step.step <= healthy_until && r.step.has_grad_norm && std::isfinite(r.step.grad_norm))
      norms.push_back(r.step.grad_norm);
  if (norms.empty()) return std::nullopt;
  std::nth_element(norms.begin(), norms.begin() + norms.size() / 2, norms.end());
  double limit = kVanishRatio * norms[norms.size() / 2];
  return LastingFrom(records, [&](const StepSample& s) {
    return s.has_grad_norm && std::isfinite(s.grad_norm) && s.grad_norm <= limit;
  });
}

// Reads NAME.truth.json; returns "" or an error. Exceptions stop at this edge.
std::string ReadTruth(const std::filesystem::path& path, Trace* t, std::optional<uint64_t>* fault) {
  try {
    std::ifstream in(path);
    json j = json::parse(in);
    t->info.loss_upper_bound = j.value("loss_upper_bound", 0.0);
    if (j.contains("fault") && j["fault"].is_object()) *fault = j["fault"]["step"].get<uint64_t>();
    std::string kind = j.at("kind").get<std::string>();
    t->faulty = kind != "healthy" || fault->has_value();
    if (kind == "healthy") return "";
    std::optional<Kind> k = KindNamed(kind);
    if (!k) return path.string() + ": unknown kind '" + kind + "'";
    if (j.at("step").is_null()) return "";
    t->events.push_back({*k, j["step"].get<uint64_t>()});
    if (!*fault) *fault = t->events.back().step;
    return "";
  } catch (const std::exception& e) {
    return path.string() + ": " + e.what();
  }
}

bool HasKind(const Trace& t, Kind k) {
  return std::any_of(t.events.begin(), t.events.end(),
                     [k](const TruthEvent& e) { return e.kind == k; });
}

// A slow divergence starts where the loss turns up: the lowest smoothed loss (EWMA 0.9) within
// 100 steps of the fault (the optimizer's momentum carries the descent on for a while).
void MoveToTurn(const std::vector<ReplayRecord>& records, TruthEvent* e) {
  double smooth = detect::kNaN, lowest = std::numeric_limits<double>::infinity();
  for (const ReplayRecord& r : records) {
    smooth = std::isnan(smooth) ? r.step.loss : 0.9 * smooth + 0.1 * r.step.loss;
    if (r.step.step < e->step || r.step.step > e->step + 100 || smooth >= lowest) continue;
    lowest = smooth;
    e->step = r.step.step;
  }
}

// Adds the collapse and vanishing events found in the trace and sets the healthy horizon.
void DeriveTruth(Trace* t, std::optional<uint64_t> fault) {
  for (TruthEvent& e : t->events)
    if (e.kind == Kind::kSlowDivergence) MoveToTurn(t->records, &e);
  uint64_t last = t->records.empty() ? 0 : t->records.back().step.step;
  t->healthy_until = fault ? *fault - 1 : last;
  if (!HasKind(*t, Kind::kCollapse))
    if (auto s = CollapseStep(t->records, t->info.loss_upper_bound))
      t->events.push_back({Kind::kCollapse, *s});
  if (!HasKind(*t, Kind::kVanishing))
    if (auto s = VanishingStep(t->records, t->healthy_until))
      t->events.push_back({Kind::kVanishing, *s});
  for (const TruthEvent& e : t->events) t->healthy_until = std::min(t->healthy_until, e.step - 1);
  t->healthy = !t->faulty && t->events.empty();
  if (!t->faulty && !t->events.empty())
    std::fprintf(stderr,
                 "detection_bench: %s is labelled healthy but has events: scored as faulty\n",
                 t->name.c_str());
  if (t->faulty && t->events.empty())
    std::fprintf(stderr,
                 "detection_bench: %s shows no event: only its steps before the fault count\n",
                 t->name.c_str());
}

std::string LoadTrace(const std::filesystem::path& dir, const std::string& name, Trace* t) {
  t->name = name;
  std::optional<uint64_t> fault;
  std::string error = ReadTruth(dir / (name + ".truth.json"), t, &fault);
  if (!error.empty()) return error;
  ParseResult parsed = ReadCsvFile((dir / (name + ".csv")).string());
  if (!parsed.ok()) return parsed.error;
  t->records = std::move(parsed.records);
  DeriveTruth(t, fault);
  return "";
}

}  // namespace

std::string LoadTraces(const std::filesystem::path& dir, std::vector<Trace>* traces) {
  const std::string suffix = ".truth.json";
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string file = entry.path().filename().string();
    if (file.size() > suffix.size() && file.compare(file.size() - suffix.size(), suffix.size(),
                                                    suffix) == 0)
      names.push_back(file.substr(0, file.size() - suffix.size()));
  }
  if (ec) return dir.string() + ": " + ec.message();
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    traces->emplace_back();
    std::string error = LoadTrace(dir, name, &traces->back());
    if (!error.empty()) return error;
  }
  return traces->empty() ? dir.string() + ": no *.truth.json traces" : "";
}

}  // namespace gradwatch::bench
