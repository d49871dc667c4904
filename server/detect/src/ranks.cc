// Data parallel, from rank 0's step: which rank a step's trouble comes from, a rank whose
// batch went bad (departure), and a rank the others wait for (straggler). Every comparison is
// against the median of the OTHER ranks' values, so one bad rank cannot drag its own yardstick.
#include <algorithm>
#include <cmath>
#include <limits>

#include "format.h"
#include "gradwatch/detect/detectors.h"

namespace gradwatch::detect {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// (*out)[r] = the median of v without v[r], for each of n >= 2 ranks; non-finite values count
// as +inf. Sorts once: removing the rank at sorted position p shifts the order statistics
// above p down by one. O(n log n); sorted is scratch.
void MediansOfOthers(const double* v, size_t n, std::vector<std::pair<double, size_t>>* sorted,
                     std::vector<double>* out) {
  sorted->clear();
  for (size_t i = 0; i < n; ++i) sorted->emplace_back(std::isfinite(v[i]) ? v[i] : kInf, i);
  std::sort(sorted->begin(), sorted->end());
  out->assign(n, kNaN);
  const size_t m = n - 1;  // the others
  for (size_t p = 0; p < n; ++p) {
    auto kth = [&](size_t k) { return (*sorted)[k < p ? k : k + 1].first; };
    (*out)[(*sorted)[p].second] = m % 2 ? kth(m / 2) : (kth(m / 2 - 1) + kth(m / 2)) / 2;
  }
}

bool AllPositive(const double* v, size_t n) {
  if (v == nullptr) return false;
  for (size_t i = 0; i < n; ++i)
    if (!(v[i] > 0) || !std::isfinite(v[i])) return false;
  return true;
}

unsigned long long Ull(uint64_t v) { return v; }

// Rank r took `seconds` against the others' median `median`, `slow` steps in a row up to `step`.
Event Straggler(uint64_t step, unsigned r, double seconds, double median, uint64_t slow) {
  Event e;
  e.step = step;
  e.kind = EventKind::kStraggler;
  e.severity = Severity::kWarning;
  e.value = seconds / median;
  e.rank = r;
  const uint64_t from = step >= slow ? step - slow + 1 : 0;
  e.message = Format(
      "rank %u's compute time %.3g s is %s the other ranks' median %.3g s, %llu steps in a row "
      "(steps %llu-%llu): rank %u is a straggler, the others wait for it in every all-reduce",
      r, seconds, Times(e.value).c_str(), median, Ull(slow), Ull(from), Ull(step), r);
  return e;
}

}  // namespace

std::optional<RankLead> LeadingRank(const double* v, size_t n, double min_ratio) {
  if (v == nullptr || n < 2) return std::nullopt;
  std::vector<std::pair<double, size_t>> sorted;
  std::vector<double> medians;
  MediansOfOthers(v, n, &sorted, &medians);
  std::optional<RankLead> best;
  for (size_t r = 0; r < n; ++r) {
    const double m = medians[r];
    if (!(m > 0) || !std::isfinite(m)) continue;
    const double ratio = std::isfinite(v[r]) ? v[r] / m : kInf;
    if (ratio >= min_ratio && (!best || ratio > best->ratio))
      best = RankLead{static_cast<uint32_t>(r), v[r], m, ratio};
  }
  return best;
}

// --- Rank departure ---------------------------------------------------------------------------

RankDepartureDetector::RankDepartureDetector(const Thresholds& t) : t_(t) {}

void RankDepartureDetector::OnStep(const StepSample& s, std::vector<Event>* out) {
  norm_median_.clear();
  loss_median_.clear();
  const size_t n = s.n_ranks;
  if (n < 2 || (s.rank_grad_norms == nullptr && s.rank_losses == nullptr)) return;
  while (ranks_.size() < n) {
    Ewma e(t_.spike_alpha, t_.spike_var_alpha, t_.spike_warmup);
    ranks_.push_back({e, e, e, Latch()});
  }
  if (s.rank_grad_norms) MediansOfOthers(s.rank_grad_norms, n, &scratch_, &norm_median_);
  const bool losses_ok = AllPositive(s.rank_losses, n);
  if (losses_ok) MediansOfOthers(s.rank_losses, n, &scratch_, &loss_median_);
  on_ = 0;
  for (size_t r = 0; r < ranks_.size(); ++r) {
    Check c = r < n ? Judge(s, r, losses_ok) : Check{};
    Latch& latch = ranks_[r].latch;
    const bool on = c.nonfinite || c.norm || c.loss || (latch.on() && c.hold);
    if (latch.Update(on, c.nonfinite ? Severity::kCritical : Severity::kWarning))
      out->push_back(Departure(s, r, c));
    on_ += latch.on();
  }
}

RankDepartureDetector::Check RankDepartureDetector::Judge(const StepSample& s, size_t r,
                                                          bool losses_ok) const {
  Check c;
  const Rank& k = ranks_[r];
  if (s.rank_grad_norms) {
    const double g = s.rank_grad_norms[r], m = norm_median_[r];
    if (std::isfinite(m) && m > 0) {
      c.norm_ratio = g / m;
      if (!std::isfinite(g)) {
        c.nonfinite = true;
      } else if (g > 0 && k.norm.count() > 0) {
        const double self = g / std::exp(k.norm.mean());
        c.norm = c.norm_ratio >= t_.rank_departure_ratio && self >= t_.rank_departure_self;
        c.hold = c.norm_ratio >= std::sqrt(t_.rank_departure_ratio) &&
                 self >= std::sqrt(t_.rank_departure_self);
      }
    }
  }
  if (losses_ok && k.spread.ready()) {
    const double loss = s.rank_losses[r];
    c.loss_ratio = loss / loss_median_[r];
    c.loss_z = k.spread.Z(std::log(c.loss_ratio), t_.loss_std_floor);
    const double self = loss / std::exp(k.loss.mean());
    const double low = std::sqrt(t_.rank_loss_ratio);
    c.loss = c.loss_z >= t_.rank_loss_departure && c.loss_ratio >= t_.rank_loss_ratio &&
             self >= t_.rank_loss_ratio;
    c.hold = c.hold ||
             (c.loss_z >= t_.rank_loss_departure / 2 && c.loss_ratio >= low && self >= low);
  }
  return c;
}

Event RankDepartureDetector::Departure(const StepSample& s, size_t r, const Check& c) const {
  Event e;
  e.step = s.step;
  e.kind = EventKind::kRankDeparture;
  e.severity = c.nonfinite ? Severity::kCritical : Severity::kWarning;
  e.rank = static_cast<uint32_t>(r);
  const unsigned rank = static_cast<unsigned>(r);
  const std::string suspect = Format(" at step %llu: suspect rank %u's batch", Ull(s.step), rank);
  if (c.nonfinite) {
    e.value = s.rank_grad_norms[r];
    e.message = Format("rank %u's local gradient norm is %g while the other ranks' median is %.3g",
                       rank, s.rank_grad_norms[r], norm_median_[r]) + suspect;
    return e;
  }
  if (c.norm) {
    e.value = c.norm_ratio;
    e.message = Format("rank %u's local gradient norm %.3g is %s the other ranks' median %.3g", rank,
                       s.rank_grad_norms[r], Times(c.norm_ratio).c_str(), norm_median_[r]);
    if (c.loss)
      e.message += Format("; its loss %.3g is %s theirs", s.rank_losses[r], Times(c.loss_ratio).c_str());
    e.message += suspect;
    return e;
  }
  e.value = c.loss_ratio;
  e.message = Format("rank %u's loss %.3g is %s the other ranks' median %.3g (%.1fσ above its usual "
                     "ratio to theirs)",
                     rank, s.rank_losses[r], Times(c.loss_ratio).c_str(), loss_median_[r], c.loss_z) +
              suspect;
  return e;
}

void RankDepartureDetector::Learn(const StepSample& s) {
  const size_t n = s.n_ranks;
  if (n < 2 || ranks_.size() < n) return;
  for (size_t r = 0; r < n; ++r) {
    Rank& k = ranks_[r];
    if (s.rank_grad_norms && std::isfinite(s.rank_grad_norms[r]) && s.rank_grad_norms[r] > 0)
      k.norm.Add(std::log(s.rank_grad_norms[r]));
    if (loss_median_.size() == n) {  // this step's losses were all positive and finite
      k.loss.Add(std::log(s.rank_losses[r]));
      k.spread.Add(std::log(s.rank_losses[r] / loss_median_[r]));
    }
  }
}

// --- Stragglers -------------------------------------------------------------------------------

StragglerDetector::StragglerDetector(const Thresholds& t) : t_(t) {}

void StragglerDetector::OnStep(const StepSample& s, std::vector<Event>* out) {
  const size_t n = s.n_ranks;
  if (n < 2 || s.rank_compute_seconds == nullptr) return;
  if (ranks_.size() < n) ranks_.resize(n);
  const double* v = s.rank_compute_seconds;
  MediansOfOthers(v, n, &scratch_, &median_);
  const double hold = std::sqrt(t_.straggler_ratio);
  for (size_t r = 0; r < n; ++r) {
    const double c = v[r], m = median_[r];
    // Slower than the others by the absolute floor at least (NaN: not reported, not slow).
    const bool over_floor = std::isfinite(c) && std::isfinite(m) && m > 0 && c - m >= t_.straggler_min_seconds;
    Rank& k = ranks_[r];
    if (k.on) {
      k.fast = over_floor && c >= hold * m ? 0 : k.fast + 1;
      if (k.fast >= t_.straggler_steps) k = Rank{};
      continue;
    }
    k.slow = over_floor && c >= t_.straggler_ratio * m ? k.slow + 1 : 0;
    if (k.slow < t_.straggler_steps) continue;
    k.on = true;
    out->push_back(Straggler(s.step, static_cast<unsigned>(r), c, m, k.slow));
  }
}

}  // namespace gradwatch::detect
