// The slow detectors of a run's course rather than of one step: a run that never learns, and
// repeated gradient spikes that point at the data.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "format.h"
#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {

NoProgressDetector::NoProgressDetector(const Thresholds& t)
    : t_(t), smooth_(t.div_alpha, t.div_alpha, 1), lowest_(std::numeric_limits<double>::infinity()) {}

std::optional<Event> NoProgressDetector::OnLoss(uint64_t step, double loss) {
  smooth_.Add(loss);
  if (++seen_ <= 10) initial_ += (loss - initial_) / static_cast<double>(seen_);
  else lowest_ = std::fmin(lowest_, smooth_.mean());
  if (done_ || seen_ < t_.progress_window) return std::nullopt;
  done_ = true;  // judged once, at the end of the window
  if (!(initial_ > 0) || lowest_ < (1 - t_.progress_min_drop) * initial_) return std::nullopt;
  Event e;
  e.step = step;
  e.kind = EventKind::kNoProgress;
  e.severity = Severity::kWarning;
  e.value = lowest_ / initial_;
  e.message = Format(
      "no progress in %llu steps: the smoothed loss never fell below %.3g, %.1f%% under its "
      "initial level %.3g (the learning rate may be too low, or the model cannot fit the data)",
      static_cast<unsigned long long>(seen_), lowest_, 100 * (1 - lowest_ / initial_), initial_);
  return e;
}

DataSuspectDetector::DataSuspectDetector(const Thresholds& t) : t_(t) {}

std::optional<Event> DataSuspectDetector::OnStep(const StepSample& s, bool spike_started) {
  const uint64_t step = s.step;
  while (!starts_.empty() && starts_.front().step + t_.data_window <= step) starts_.erase(starts_.begin());
  if (fired_ && last_fired_ + t_.data_window <= step && starts_.empty()) fired_ = false;
  if (!spike_started) return std::nullopt;
  starts_.push_back({step, std::vector<uint64_t>(s.sample_ids, s.sample_ids + (s.sample_ids ? s.n_samples : 0))});
  if (fired_ || starts_.size() < t_.data_spikes) return std::nullopt;
  fired_ = true;
  last_fired_ = step;
  std::string steps;
  for (const Start& start : starts_) steps += (steps.empty() ? "" : ", ") + std::to_string(start.step);
  Event e;
  e.step = step;
  e.kind = EventKind::kDataSuspect;
  e.severity = Severity::kWarning;
  e.value = static_cast<double>(starts_.size());
  e.message = Format(
      "%zu separate gradient spikes within %llu steps (steps %s), each back at its level within a "
      "few steps: suspect the batches of those steps (corrupt or extreme samples%s), not only the "
      "learning rate",
      starts_.size(), static_cast<unsigned long long>(t_.data_window), steps.c_str(), Items().c_str());
  return e;
}

// ": items 3 (x3), 17 (x2), 5, ..." from the spike steps' batches, the most frequent first, at most
// 12; "" when no batch was reported.
std::string DataSuspectDetector::Items() const {
  std::map<uint64_t, int> count;
  for (const Start& start : starts_)
    for (uint64_t item : start.items) ++count[item];
  if (count.empty()) return "";
  std::vector<std::pair<int, uint64_t>> ranked;
  for (const auto& [item, n] : count) ranked.push_back({-n, item});
  std::sort(ranked.begin(), ranked.end());
  std::string out = ": items ";
  for (size_t i = 0; i < ranked.size() && i < 12; ++i) {
    out += (i ? ", " : "") + std::to_string(ranked[i].second);
    if (ranked[i].first < -1) out += Format(" (x%d)", -ranked[i].first);
  }
  return ranked.size() > 12 ? out + ", ..." : out;
}

}  // namespace gradwatch::detect
