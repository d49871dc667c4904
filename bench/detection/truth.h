// bench/detection's ground truth: the truth events of a recorded trace (the sidecar's, and
// those derived from the trace itself), which gradwatch events count for each, and how late they
// may come. See detection_bench.cc for what is scored.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gradwatch/detect/event.h"
#include "gradwatch/detect/replay.h"

namespace gradwatch::bench {

enum class Kind { kExplosion, kNan, kLrSpike, kSlowDivergence, kDivergence, kCollapse, kVanishing };
constexpr Kind kKinds[] = {Kind::kExplosion,      Kind::kNan,        Kind::kLrSpike,
                           Kind::kSlowDivergence, Kind::kDivergence, Kind::kCollapse,
                           Kind::kVanishing};

const char* Name(Kind k);
// Steps after the truth step within which a flag finds the event.
uint64_t Tolerance(Kind k);
// gradwatch events that count for a truth kind.
bool InFamily(Kind k, detect::EventKind e);

struct TruthEvent {
  Kind kind;
  uint64_t step;
};

struct Trace {
  std::string name;
  std::vector<detect::ReplayRecord> records;
  detect::RunInfo info;
  std::vector<TruthEvent> events;
  uint64_t healthy_until = 0;  // steps <= this are healthy
  bool faulty = false;         // the sidecar names a fault or an event
  bool healthy = false;        // not faulty and no event found in the trace: a healthy run
};

// Loads every NAME.csv + NAME.truth.json pair of `dir`, sorted by name; "" or an error.
std::string LoadTraces(const std::filesystem::path& dir, std::vector<Trace>* traces);

}  // namespace gradwatch::bench
