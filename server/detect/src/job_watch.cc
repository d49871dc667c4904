#include "gradwatch/detect/job_watch.h"

#include <algorithm>

#include "format.h"

namespace gradwatch::detect {
namespace {

// v1::Heartbeat::Phase values (the detectors do not include the protos).
constexpr int kCompute = 1, kCollective = 2, kVerdict = 3;
constexpr size_t kIntervals = 64;

unsigned long long Ull(uint64_t v) { return v; }
double Seconds(int64_t millis) { return static_cast<double>(millis) / 1000.0; }
bool Live(const RankView& v) { return v.connected && !v.finished; }

}  // namespace

JobWatch::JobWatch(const Thresholds& t) : t_(t), intervals_(kIntervals) {}

void JobWatch::OnLeaderStep(uint64_t step, int64_t now_millis) {
  if (any_leader_step_ && step > leader_step_ && now_millis >= leader_millis_)
    intervals_.Push(Seconds(now_millis - leader_millis_) / static_cast<double>(step - leader_step_));
  any_leader_step_ = true;
  leader_step_ = step;
  leader_millis_ = now_millis;
}

double JobWatch::HangSeconds() const {
  double median = 0;
  if (intervals_.size() > 0) {
    std::vector<double> v(intervals_.size());
    for (size_t i = 0; i < v.size(); ++i) v[i] = intervals_[i];
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    median = v[v.size() / 2];
  }
  return std::max(t_.hang_min_seconds, t_.hang_factor * median);
}

std::vector<Event> JobWatch::Check(const std::vector<RankView>& ranks, int64_t now_millis) {
  std::vector<Event> out;
  CheckHang(ranks, now_millis, &out);
  CheckLag(ranks, &out);
  CheckLost(ranks, now_millis, &out);
  return out;
}

void JobWatch::CheckHang(const std::vector<RankView>& ranks, int64_t now, std::vector<Event>* out) {
  bool all_live = !ranks.empty();
  uint64_t high = 0;
  int64_t last = 0;
  for (const RankView& v : ranks) {
    all_live = all_live && Live(v);
    high = std::max(high, v.last_step);
    last = std::max(last, v.last_step_millis);
  }
  const double since = Seconds(now - last);
  if (!all_live || last == 0 || since <= HangSeconds()) {
    hung_ = false;
    return;
  }
  if (hung_) return;
  hung_ = true;
  out->push_back(Hang(ranks, now, high, since));
}

// The rank that keeps the others waiting, when the heartbeats tell; else the job as a whole.
Event JobWatch::Hang(const std::vector<RankView>& ranks, int64_t now, uint64_t step, double since) const {
  auto fresh = [&](const RankView& v) {
    return v.last_heartbeat_millis > 0 && Seconds(now - v.last_heartbeat_millis) <= t_.hang_heartbeat_seconds;
  };
  const RankView* suspect = nullptr;
  size_t suspects = 0, waiting = 0, computing = 0, silent = 0;
  for (const RankView& v : ranks) {
    const bool f = fresh(v);
    silent += !f;
    computing += f && v.phase == kCompute;
    if (f && (v.phase == kCollective || v.phase == kVerdict)) {
      ++waiting;
    } else if (!f || v.phase == kCompute) {
      ++suspects;
      suspect = &v;
    }
  }
  Event e;
  e.step = step;
  e.kind = EventKind::kHang;
  e.severity = Severity::kCritical;
  e.value = since;
  const std::string what = Format("no rank has reported a step after step %llu for %.0f s (the bound is %.0f s)",
                                  Ull(step), since, HangSeconds());
  if (suspects == 1 && waiting + 1 == ranks.size()) {
    const unsigned r = suspect->rank;
    e.rank = suspect->rank;
    std::string why =
        fresh(*suspect)
            ? Format("its last heartbeat (%.0f s ago) says it is still in its own compute",
                     Seconds(now - suspect->last_heartbeat_millis))
        : suspect->last_heartbeat_millis == 0
            ? std::string("it has sent no heartbeat")
            : Format("its heartbeats stopped %.0f s ago", Seconds(now - suspect->last_heartbeat_millis));
    e.message = Format("rank %u hangs: %s; %s while every other rank waits in a collective for it", r,
                       what.c_str(), why.c_str());
    return e;
  }
  const size_t n = ranks.size();
  std::string phases =
      silent == n ? "no rank sends heartbeats, so the rank that hangs cannot be told"
      : waiting == n
          ? "every rank waits in a collective (one that cannot complete: the network or the collective library)"
      : computing == n
          ? "every rank is in its own compute (an evaluation or checkpoint longer than the bound, or stuck input)"
          : Format("heartbeats: %zu rank(s) computing, %zu waiting in a collective, %zu silent, %zu other",
                   computing, waiting, silent, n - computing - waiting - silent);
  e.message = "the job as a whole stopped: " + what + "; " + phases;
  return e;
}

void JobWatch::CheckLag(const std::vector<RankView>& ranks, std::vector<Event>* out) {
  uint64_t high = 0;
  for (const RankView& v : ranks) high = std::max(high, v.last_step);
  for (const RankView& v : ranks) {
    Rank& k = ranks_[v.rank];
    if (!Live(v)) {
      k.lagging = false;
      continue;
    }
    const uint64_t behind = high - v.last_step;
    const bool on = behind > t_.rank_lag_steps || (k.lagging && behind > t_.rank_lag_steps / 2);
    if (on && !k.lagging) {
      Event e;
      e.step = v.last_step;
      e.kind = EventKind::kRankLag;
      e.severity = Severity::kWarning;
      e.value = static_cast<double>(behind);
      e.rank = v.rank;
      e.message = Format(
          "rank %u's reports have reached step %llu, %llu steps behind the job's step %llu (limit %llu): its "
          "reporter is stuck or backlogged, or the rank does not step with the others",
          v.rank, Ull(v.last_step), Ull(behind), Ull(high), Ull(t_.rank_lag_steps));
      out->push_back(std::move(e));
    }
    k.lagging = on;
  }
}

void JobWatch::CheckLost(const std::vector<RankView>& ranks, int64_t now, std::vector<Event>* out) {
  const size_t live = static_cast<size_t>(std::count_if(ranks.begin(), ranks.end(), Live));
  if (live > 0 && first_live_millis_ < 0) first_live_millis_ = now;
  for (const RankView& v : ranks) {
    Rank& k = ranks_[v.rank];
    if (v.connected) k.seen = true;
    if (!k.seen && !v.finished && first_live_millis_ >= 0) {
      CheckJoined(v, live, now, &k, out);
      continue;
    }
    if (v.connected || v.finished || !k.seen) {
      k.gone = k.lost = false;
      continue;
    }
    if (!k.gone) {
      k.gone = true;
      k.gone_millis = now;
    }
    const bool on = live > 0 && Seconds(now - k.gone_millis) >= t_.rank_lost_seconds;
    if (on && !k.lost) {
      const int64_t heard = std::max(v.last_step_millis, v.last_heartbeat_millis);
      Event e;
      e.step = v.last_step;
      e.kind = EventKind::kRankLost;
      e.severity = Severity::kCritical;
      e.value = heard > 0 ? Seconds(now - heard) : 0;
      e.rank = v.rank;
      e.message = Format(
          "rank %u's stream closed without a goodbye after step %llu while %zu other rank(s) still run: "
          "rank %u died or lost its connection, and the others will wait for it in their next collective",
          v.rank, Ull(v.last_step), live, v.rank);
      out->push_back(std::move(e));
    }
    k.lost = on;
  }
}

// A rank never seen connected: lost once rank_join_seconds passed since the first rank was.
void JobWatch::CheckJoined(const RankView& v, size_t live, int64_t now, Rank* k, std::vector<Event>* out) const {
  const double waited = Seconds(now - first_live_millis_);
  const bool on = live > 0 && waited >= t_.rank_join_seconds;
  if (on && !k->lost) {
    Event e;
    e.step = v.last_step;
    e.kind = EventKind::kRankLost;
    e.severity = Severity::kCritical;
    e.value = waited;
    e.rank = v.rank;
    e.message = Format(
        "rank %u has not connected to this monitor %.0f s after the job's first rank did, while %zu other "
        "rank(s) run%s: it never started, cannot reach the monitor, or died while the monitor was down; the "
        "others will wait for it in their next collective",
        v.rank, waited, live,
        v.last_step > 0 ? Format(" (its last stored step is %llu)", Ull(v.last_step)).c_str() : "");
    out->push_back(std::move(e));
  }
  k->lost = on;
}

}  // namespace gradwatch::detect
