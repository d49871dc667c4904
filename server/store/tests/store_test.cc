#include "gradwatch/store/store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <unistd.h>

namespace gradwatch::store {
namespace {

std::string TempDb(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("gradwatch-store-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  return (dir / "gradwatch.db").string();
}

v1::StepReport MakeStep(uint64_t step, double loss) {
  v1::StepReport s;
  s.set_step(step);
  s.set_loss(loss);
  s.set_grad_norm(0.5 * step);
  s.add_layer_grad_norms(0.25f);
  s.add_layer_grad_norms(1.5f);
  return s;
}

TEST(Store, keeps_each_step_once_when_resent) {
  Store store({TempDb("dedup")});
  for (uint64_t i = 1; i <= 10; ++i) store.PutStep("r1", MakeStep(i, 1.0 / i));
  for (uint64_t i = 5; i <= 12; ++i) store.PutStep("r1", MakeStep(i, 99.0));  // resend 5..10
  store.Flush();
  auto [count, last] = store.StepCount("r1");
  EXPECT_EQ(count, 12u);
  EXPECT_EQ(last, 12u);
  auto steps = store.ListSteps("r1", 0, 100);
  ASSERT_EQ(steps.size(), 12u);
  EXPECT_DOUBLE_EQ(steps[4].loss(), 1.0 / 5);  // the first write of step 5 wins
}

TEST(Store, round_trips_every_step_field_including_layer_norms) {
  Store store({TempDb("fields")});
  v1::StepReport s = MakeStep(3, std::nan(""));
  s.set_epoch(2);
  s.set_jaccard_hard(0.75);
  s.mutable_clipping()->set_kind(v1::Clipping::KIND_NORM);
  s.mutable_clipping()->set_threshold(1.0);
  s.set_update_skipped(true);
  store.PutStep("r", s);
  store.Flush();
  auto steps = store.ListSteps("r", 0, 10);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_TRUE(std::isnan(steps[0].loss()));
  EXPECT_EQ(steps[0].epoch(), 2u);
  EXPECT_DOUBLE_EQ(steps[0].jaccard_hard(), 0.75);
  ASSERT_EQ(steps[0].layer_grad_norms_size(), 2);
  EXPECT_FLOAT_EQ(steps[0].layer_grad_norms(1), 1.5f);
  EXPECT_EQ(steps[0].clipping().kind(), v1::Clipping::KIND_NORM);
  EXPECT_TRUE(steps[0].update_skipped());
}

TEST(Store, round_trips_scalars_and_system_metrics) {
  Store store({TempDb("scalars")});
  v1::StepReport s = MakeStep(1, 0.5);
  (*s.mutable_scalars())["output_mean"] = 0.1 + 0.2;
  (*s.mutable_scalars())["nan"] = std::nan("");
  s.mutable_system()->set_compute_seconds(0.012);
  s.mutable_system()->set_resident_bytes(1u << 30);
  store.PutStep("r", s);
  store.PutStep("r", MakeStep(2, 0.25));  // none of either
  store.Flush();
  auto steps = store.ListSteps("r", 0, 10);
  ASSERT_EQ(steps.size(), 2u);
  ASSERT_EQ(steps[0].scalars_size(), 2);
  EXPECT_EQ(steps[0].scalars().at("output_mean"), 0.1 + 0.2);
  EXPECT_TRUE(std::isnan(steps[0].scalars().at("nan")));
  EXPECT_EQ(steps[0].system().compute_seconds(), 0.012);
  EXPECT_EQ(steps[0].system().resident_bytes(), 1u << 30);
  EXPECT_FALSE(steps[0].system().has_data_seconds());
  EXPECT_EQ(steps[1].scalars_size(), 0);
  EXPECT_FALSE(steps[1].has_system());
}

// A store made before steps had an extra column gains it on open and keeps its steps.
TEST(Store, adds_the_extra_column_to_an_older_store) {
  const std::string path = TempDb("old-schema");
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE steps (run_id TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER,"
                           " loss REAL, learning_rate REAL, grad_norm REAL, layer_grad_norms BLOB,"
                           " jaccard_soft REAL, jaccard_hard REAL, accuracy REAL, clip_kind INTEGER,"
                           " clip_threshold REAL, step_seconds REAL, unix_millis INTEGER,"
                           " update_skipped INTEGER, rolled_back_to INTEGER, PRIMARY KEY (run_id, step))"
                           " WITHOUT ROWID;"
                           "INSERT INTO steps (run_id, step, loss) VALUES ('old', 1, 0.5);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  Store store({path});
  v1::StepReport s = MakeStep(2, 0.25);
  (*s.mutable_scalars())["x"] = 1;
  store.PutStep("old", s);
  store.Flush();
  auto steps = store.ListSteps("old", 0, 10);
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].loss(), 0.5);
  EXPECT_EQ(steps[1].scalars().at("x"), 1);
}

TEST(Store, pages_steps_after_a_given_step) {
  Store store({TempDb("paging")});
  for (uint64_t i = 1; i <= 30; ++i) store.PutStep("r", MakeStep(i, 1));
  store.Flush();
  auto page = store.ListSteps("r", 10, 5);
  ASSERT_EQ(page.size(), 5u);
  EXPECT_EQ(page.front().step(), 11u);
  EXPECT_EQ(page.back().step(), 15u);
}

TEST(Store, reports_highest_committed_step_per_stream) {
  std::map<std::string, uint64_t> seen;
  std::mutex mu;
  StoreOptions opts{TempDb("committed")};
  opts.on_committed = [&](const std::map<StreamKey, uint64_t>& s) {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [key, step] : s) {
      uint64_t& high = seen[key.run_id + "/" + std::to_string(key.rank)];
      high = std::max(high, step);
    }
  };
  Store store(opts);
  for (uint64_t i = 1; i <= 7; ++i) store.PutStep("a", MakeStep(i, 1));
  store.PutStep("b", MakeStep(3, 1));
  store.PutStep("a", MakeStep(5, 1), 1);  // rank 1 of run a
  store.Flush();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(seen["a/0"], 7u);
  EXPECT_EQ(seen["b/0"], 3u);
  EXPECT_EQ(seen["a/1"], 5u);
}

TEST(Store, keeps_each_ranks_steps_once_and_apart_from_rank_zero) {
  Store store({TempDb("ranks")});
  for (uint64_t i = 1; i <= 4; ++i) store.PutStep("job", MakeStep(i, 0.5), 0);
  for (uint32_t rank : {1u, 2u}) {
    for (uint64_t i = 1; i <= 3; ++i) {
      v1::StepReport s = MakeStep(i, 1.0 + rank);
      s.set_local_grad_norm(10.0 * rank + i);
      store.PutStep("job", s, rank);
    }
  }
  v1::StepReport resent = MakeStep(2, 99);  // a resend after a reconnect: the first one stays
  store.PutStep("job", resent, 1);
  store.Flush();
  EXPECT_EQ(store.StepCount("job").first, 4u);  // rank 0's: the run-level steps
  auto rank1 = store.ListRankSteps("job", 1, 0, 100);
  ASSERT_EQ(rank1.size(), 3u);
  EXPECT_DOUBLE_EQ(rank1[1].loss(), 2.0);
  EXPECT_DOUBLE_EQ(rank1[2].local_grad_norm(), 13.0);
  EXPECT_EQ(store.ListRankSteps("job", 2, 1, 100).size(), 2u);
  EXPECT_TRUE(store.ListRankSteps("job", 3, 0, 100).empty());
  auto highs = store.RankHighs("job");
  EXPECT_EQ(highs, (std::map<uint32_t, uint64_t>{{1, 3}, {2, 3}}));
}

TEST(Store, survives_reopen_with_runs_events_and_commands) {
  std::string path = TempDb("reopen");
  {
    Store store({path});
    v1::Run run;
    run.set_run_id("r");
    run.set_state(v1::RUN_STATE_RUNNING);
    store.PutRun(run);
    store.PutStep("r", MakeStep(1, 0.5));
    v1::Event ev;
    ev.set_run_id("r");
    ev.set_step(1);
    ev.set_kind("grad_spike");
    store.PutEvent(ev);
    v1::CommandRecord cmd;
    cmd.set_run_id("r");
    cmd.mutable_command()->set_id("c-1");
    cmd.mutable_command()->set_scale_learning_rate(0.5);
    store.PutCommand(cmd);
    cmd.mutable_ack()->set_applied_at_step(2);  // ack replaces the record
    store.PutCommand(cmd);
  }
  Store store({path});
  ASSERT_EQ(store.ListRuns().size(), 1u);
  EXPECT_EQ(store.GetRun("r")->state(), v1::RUN_STATE_RUNNING);
  EXPECT_EQ(store.StepCount("r").first, 1u);
  ASSERT_EQ(store.ListEvents("r").size(), 1u);
  EXPECT_EQ(store.ListEvents("r")[0].kind(), "grad_spike");
  auto cmds = store.ListCommands("r");
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(cmds[0].ack().applied_at_step(), 2u);
  EXPECT_FALSE(store.GetRun("missing").has_value());
}

TEST(Store, names_the_path_when_it_cannot_open) {
  try {
    Store store({"/proc/no-such-dir/x.db"});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("/proc/no-such-dir"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gradwatch::store
