// JobWatch: a data-parallel job as a whole on the monitor's clock (plain millis, no sleeps):
// hangs, lagging ranks, lost ranks.
#include "gradwatch/detect/job_watch.h"

#include <gtest/gtest.h>

namespace gradwatch::detect {
namespace {

constexpr int kCompute = 1, kCollective = 2;
constexpr int64_t kSecond = 1000;

Thresholds Fast() {
  Thresholds t;
  EXPECT_TRUE(t.Apply({{"hang_min_seconds", 60}, {"hang_factor", 20}, {"rank_lag_steps", 100}}).ok());
  return t;
}

// A job of n ranks, all connected, that stepped once a second up to `step` at `at` seconds.
struct Job {
  std::vector<RankView> ranks;
  Job(size_t n, uint64_t step, int64_t at) {
    for (uint32_t r = 0; r < n; ++r) {
      RankView v;
      v.rank = r;
      v.connected = true;
      v.last_step = step;
      v.last_step_millis = at * kSecond;
      ranks.push_back(v);
    }
  }
  // Rank r's last heartbeat at `at` seconds, in `phase`.
  void Beat(uint32_t r, int phase, int64_t at) {
    ranks[r].phase = phase;
    ranks[r].phase_since_millis = 1700000000000 + at * kSecond;  // the trainer's clock
    ranks[r].last_heartbeat_millis = at * kSecond;
  }
};

// Feeds rank 0's steps 1..`steps`, one every `every` seconds from 0; returns the time of the last.
int64_t Steps(JobWatch& w, uint64_t steps, int64_t every) {
  for (uint64_t s = 1; s <= steps; ++s) w.OnLeaderStep(s, static_cast<int64_t>(s) * every * kSecond);
  return static_cast<int64_t>(steps) * every;
}

TEST(JobWatch, a_hang_names_the_rank_still_computing_while_the_others_wait_in_a_collective) {
  JobWatch w(Fast());
  int64_t t = Steps(w, 100, 1);
  Job job(4, 100, t);
  for (uint32_t r : {0u, 1u, 3u}) job.Beat(r, kCollective, t + 59);
  job.Beat(2, kCompute, t + 59);
  EXPECT_TRUE(w.Check(job.ranks, (t + 60) * kSecond).empty());  // 60 s: at the bound, not past it
  std::vector<Event> events = w.Check(job.ranks, (t + 61) * kSecond);
  ASSERT_EQ(events.size(), 1u);
  const Event& e = events[0];
  EXPECT_EQ(e.kind, EventKind::kHang);
  EXPECT_EQ(e.severity, Severity::kCritical);
  EXPECT_EQ(e.step, 100u);
  ASSERT_TRUE(e.rank.has_value());
  EXPECT_EQ(*e.rank, 2u);
  EXPECT_DOUBLE_EQ(e.value, 61);
  EXPECT_EQ(e.message,
            "rank 2 hangs: no rank has reported a step after step 100 for 61 s (the bound is 60 s); its last "
            "heartbeat (2 s ago) says it is still in its own compute while every other rank waits in a "
            "collective for it");
  EXPECT_TRUE(w.Check(job.ranks, (t + 62) * kSecond).empty());  // once per episode
}

TEST(JobWatch, a_hang_names_the_rank_whose_heartbeats_stopped) {
  JobWatch w(Fast());
  int64_t t = Steps(w, 50, 1);
  Job job(3, 50, t);
  job.Beat(0, kCollective, t + 70);
  job.Beat(1, kCompute, t + 1);  // then nothing: frozen
  job.Beat(2, kCollective, t + 70);
  std::vector<Event> events = w.Check(job.ranks, (t + 71) * kSecond);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(*events[0].rank, 1u);
  EXPECT_NE(events[0].message.find("its heartbeats stopped 70 s ago"), std::string::npos) << events[0].message;
}

TEST(JobWatch, a_hang_without_heartbeats_names_no_rank_and_says_the_job_stopped) {
  JobWatch w(Fast());
  int64_t t = Steps(w, 50, 1);
  Job job(2, 50, t);
  std::vector<Event> events = w.Check(job.ranks, (t + 61) * kSecond);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::kHang);
  EXPECT_FALSE(events[0].rank.has_value());
  EXPECT_EQ(events[0].message,
            "the job as a whole stopped: no rank has reported a step after step 50 for 61 s (the bound is 60 s); "
            "no rank sends heartbeats, so the rank that hangs cannot be told");
}

TEST(JobWatch, a_hang_with_every_rank_in_a_collective_names_no_rank) {
  JobWatch w(Fast());
  int64_t t = Steps(w, 50, 1);
  Job job(3, 50, t);
  for (uint32_t r = 0; r < 3; ++r) job.Beat(r, kCollective, t + 60);
  std::vector<Event> events = w.Check(job.ranks, (t + 61) * kSecond);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FALSE(events[0].rank.has_value());
  EXPECT_NE(events[0].message.find("every rank waits in a collective"), std::string::npos) << events[0].message;
}

TEST(JobWatch, the_hang_bound_follows_the_jobs_step_interval) {
  JobWatch w(Fast());
  int64_t t = Steps(w, 30, 10);  // a step every 10 s: 20 x 10 s = 200 s > 60 s
  EXPECT_DOUBLE_EQ(w.HangSeconds(), 200);
  Job job(2, 30, t);
  EXPECT_TRUE(w.Check(job.ranks, (t + 150) * kSecond).empty());
  std::vector<Event> events = w.Check(job.ranks, (t + 201) * kSecond);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::kHang);
}

TEST(JobWatch, new_thresholds_apply_to_the_next_check_and_keep_the_learned_interval) {
  JobWatch w(Fast());
  int64_t t = Steps(w, 30, 10);
  Thresholds longer = Fast();
  ASSERT_TRUE(longer.Apply({{"hang_min_seconds", 600}}).ok());
  w.SetThresholds(longer);
  EXPECT_DOUBLE_EQ(w.HangSeconds(), 600);
  Job job(2, 30, t);
  EXPECT_TRUE(w.Check(job.ranks, (t + 500) * kSecond).empty());
  EXPECT_EQ(w.Check(job.ranks, (t + 601) * kSecond).size(), 1u);
  Thresholds shorter = Fast();
  ASSERT_TRUE(shorter.Apply({{"hang_min_seconds", 1}}).ok());
  w.SetThresholds(shorter);
  EXPECT_DOUBLE_EQ(w.HangSeconds(), 200);  // 20 x the 10 s interval learned before
}

TEST(JobWatch, no_hang_while_steps_flow_after_a_rank_finished_or_before_the_first_step) {
  JobWatch w(Fast());
  Job job(2, 0, 0);
  job.ranks[0].last_step_millis = job.ranks[1].last_step_millis = 0;
  EXPECT_TRUE(w.Check(job.ranks, 500 * kSecond).empty());  // no step yet: RunStalled's case
  for (uint64_t s = 1; s <= 300; ++s) {
    const int64_t now = static_cast<int64_t>(s) * kSecond;
    w.OnLeaderStep(s, now);
    for (RankView& v : job.ranks) {
      v.last_step = s;
      v.last_step_millis = now;
    }
    EXPECT_TRUE(w.Check(job.ranks, now + 500).empty()) << s;
  }
  job.ranks[0].finished = true;  // said goodbye: the job is ending
  job.ranks[0].connected = false;
  EXPECT_TRUE(w.Check(job.ranks, 1000 * kSecond).empty());
}

TEST(JobWatch, a_hang_is_re_armed_by_a_new_step) {
  JobWatch w(Fast());
  int64_t t = Steps(w, 10, 1);
  Job job(2, 10, t);
  EXPECT_EQ(w.Check(job.ranks, (t + 61) * kSecond).size(), 1u);
  EXPECT_TRUE(w.Check(job.ranks, (t + 100) * kSecond).empty());
  w.OnLeaderStep(11, (t + 101) * kSecond);
  for (RankView& v : job.ranks) {
    v.last_step = 11;
    v.last_step_millis = (t + 101) * kSecond;
  }
  EXPECT_TRUE(w.Check(job.ranks, (t + 102) * kSecond).empty());
  std::vector<Event> again = w.Check(job.ranks, (t + 162) * kSecond);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].step, 11u);
}

TEST(JobWatch, a_rank_far_behind_lags_once_until_it_catches_up) {
  JobWatch w(Fast());
  Job job(4, 500, 100);
  job.ranks[3].last_step = 380;  // 120 behind, limit 100
  std::vector<Event> events = w.Check(job.ranks, 101 * kSecond);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::kRankLag);
  EXPECT_EQ(events[0].severity, Severity::kWarning);
  EXPECT_EQ(*events[0].rank, 3u);
  EXPECT_EQ(events[0].step, 380u);
  EXPECT_DOUBLE_EQ(events[0].value, 120);
  EXPECT_NE(events[0].message.find("rank 3's reports have reached step 380, 120 steps behind the job's step 500"),
            std::string::npos)
      << events[0].message;
  job.ranks[3].last_step = 430;  // 70 behind: still more than half the limit
  EXPECT_TRUE(w.Check(job.ranks, 102 * kSecond).empty());
  job.ranks[3].last_step = 460;  // 40 behind: caught up
  EXPECT_TRUE(w.Check(job.ranks, 103 * kSecond).empty());
  job.ranks[3].last_step = 390;
  EXPECT_EQ(w.Check(job.ranks, 104 * kSecond).size(), 1u);  // re-armed
  job.ranks[3].last_step = 500;
  job.ranks[3].connected = false;  // a disconnected rank is the lost check's
  job.ranks[3].finished = true;
  EXPECT_TRUE(w.Check(job.ranks, 105 * kSecond).empty());
}

TEST(JobWatch, a_rank_that_died_is_lost_at_once_while_the_others_wait) {
  JobWatch w(Fast());
  Job job(4, 57, 100);
  EXPECT_TRUE(w.Check(job.ranks, 100 * kSecond).empty());
  job.ranks[2].connected = false;
  job.ranks[2].last_heartbeat_millis = 98 * kSecond;
  std::vector<Event> events = w.Check(job.ranks, 103 * kSecond);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::kRankLost);
  EXPECT_EQ(events[0].severity, Severity::kCritical);
  EXPECT_EQ(*events[0].rank, 2u);
  EXPECT_EQ(events[0].step, 57u);
  EXPECT_DOUBLE_EQ(events[0].value, 3);  // since its last step (100 s) and heartbeat (98 s)
  EXPECT_EQ(events[0].message,
            "rank 2's stream closed without a goodbye after step 57 while 3 other rank(s) still run: rank 2 died "
            "or lost its connection, and the others will wait for it in their next collective");
  EXPECT_TRUE(w.Check(job.ranks, 104 * kSecond).empty());  // once
  job.ranks[2].connected = true;                           // back: re-armed
  EXPECT_TRUE(w.Check(job.ranks, 105 * kSecond).empty());
  job.ranks[2].connected = false;
  EXPECT_EQ(w.Check(job.ranks, 106 * kSecond).size(), 1u);
}

TEST(JobWatch, a_rank_is_not_lost_when_it_finished_never_connected_or_nobody_waits) {
  JobWatch w(Fast());
  Job job(3, 10, 100);
  job.ranks[2].connected = false;  // not started yet
  EXPECT_TRUE(w.Check(job.ranks, 100 * kSecond).empty());
  job.ranks[2].connected = true;
  EXPECT_TRUE(w.Check(job.ranks, 101 * kSecond).empty());
  job.ranks[2].connected = false;
  job.ranks[2].finished = true;  // said goodbye
  EXPECT_TRUE(w.Check(job.ranks, 102 * kSecond).empty());
  job.ranks[1].connected = false;  // rank 1 goes while rank 0 still runs: lost
  std::vector<Event> events = w.Check(job.ranks, 103 * kSecond);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(*events[0].rank, 1u);
  JobWatch all_gone(Fast());
  Job ended(2, 10, 100);
  EXPECT_TRUE(all_gone.Check(ended.ranks, 100 * kSecond).empty());
  for (RankView& v : ended.ranks) v.connected = false;  // the whole job went: nobody waits
  EXPECT_TRUE(all_gone.Check(ended.ranks, 101 * kSecond).empty());
}

TEST(JobWatch, a_rank_that_never_joined_is_lost_after_the_join_grace_while_the_others_run) {
  JobWatch w(Fast());  // rank_join_seconds 120
  Job job(3, 40, 100);
  job.ranks[1].connected = false;  // never seen: e.g. it died while the monitor was down
  job.ranks[1].last_step = 37;     // its stored steps
  EXPECT_TRUE(w.Check(job.ranks, 100 * kSecond).empty());
  EXPECT_TRUE(w.Check(job.ranks, 219 * kSecond).empty());
  std::vector<Event> events = w.Check(job.ranks, 220 * kSecond);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::kRankLost);
  EXPECT_EQ(*events[0].rank, 1u);
  EXPECT_EQ(events[0].step, 37u);
  EXPECT_DOUBLE_EQ(events[0].value, 120);
  EXPECT_EQ(events[0].message,
            "rank 1 has not connected to this monitor 120 s after the job's first rank did, while 2 other rank(s) "
            "run (its last stored step is 37): it never started, cannot reach the monitor, or died while the "
            "monitor was down; the others will wait for it in their next collective");
  EXPECT_TRUE(w.Check(job.ranks, 221 * kSecond).empty());  // once
  job.ranks[1].connected = true;                           // it joins late: from now on a rank like any
  for (RankView& v : job.ranks) v.last_step_millis = 221 * kSecond;  // and the job steps again (no hang)
  EXPECT_TRUE(w.Check(job.ranks, 222 * kSecond).empty());
  job.ranks[1].connected = false;
  EXPECT_EQ(w.Check(job.ranks, 223 * kSecond).size(), 1u);  // and lost at once when it goes
}

TEST(JobWatch, a_rank_that_never_joined_is_not_lost_while_no_other_rank_runs_or_it_finished) {
  JobWatch w(Fast());
  Job job(2, 0, 0);
  for (RankView& v : job.ranks) v.connected = false;
  EXPECT_TRUE(w.Check(job.ranks, 500 * kSecond).empty());  // nobody ran yet: no clock started
  job.ranks[0].connected = true;
  job.ranks[1].finished = true;  // its goodbye stored before the restart
  EXPECT_TRUE(w.Check(job.ranks, 501 * kSecond).empty());
  EXPECT_TRUE(w.Check(job.ranks, 900 * kSecond).empty());
}

TEST(JobWatch, rank_lost_seconds_tolerates_a_quick_reconnect) {
  Thresholds t = Fast();
  ASSERT_TRUE(t.Apply({{"rank_lost_seconds", 10}}).ok());
  JobWatch w(t);
  Job job(2, 10, 100);
  EXPECT_TRUE(w.Check(job.ranks, 100 * kSecond).empty());
  job.ranks[1].connected = false;
  EXPECT_TRUE(w.Check(job.ranks, 101 * kSecond).empty());
  EXPECT_TRUE(w.Check(job.ranks, 110 * kSecond).empty());
  job.ranks[1].connected = true;  // reconnected after 9 s
  EXPECT_TRUE(w.Check(job.ranks, 111 * kSecond).empty());
  job.ranks[1].connected = false;
  EXPECT_TRUE(w.Check(job.ranks, 112 * kSecond).empty());
  EXPECT_EQ(w.Check(job.ranks, 122 * kSecond).size(), 1u);
}

}  // namespace
}  // namespace gradwatch::detect
