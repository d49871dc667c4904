// Group commit: one transaction takes everything queued (up to max_batch), each stream's
// acknowledgement comes after the commit that stored its steps, and a Flush or the
// destructor does not wait out the commit interval. The writer is held inside its first
// commit's callback (a gate) while the test queues records: no sleeps.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gradwatch/store/store.h"

namespace gradwatch::store {
namespace {

using std::chrono::steady_clock;

std::string TempDb(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("gradwatch-store-commit-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  return (dir / "gradwatch.db").string();
}

v1::StepReport MakeStep(uint64_t step) {
  v1::StepReport s;
  s.set_step(step);
  s.set_loss(0.5);
  for (int i = 0; i < 8; ++i) s.add_layer_grad_norms(0.1f * i);
  return s;
}

// Every on_committed call, in order. The first call blocks until Open(): the writer is
// then inside its first commit and everything queued meanwhile waits for the next one.
// At each call it also reads, through the store, what is stored by then.
class Commits {
 public:
  void Hook(StoreOptions& o) {
    o.on_committed = [this](const std::map<StreamKey, uint64_t>& stored) {
      std::unique_lock<std::mutex> lock(mu_);
      calls_.push_back(stored);
      for (const auto& [key, step] : stored) {
        uint64_t high = key.evals ? HighestEval(key.run_id)
                        : key.rank == 0 ? store_->StepCount(key.run_id).second
                                        : store_->RankHighs(key.run_id)[key.rank];
        if (high < step) acked_before_stored_.push_back(key.run_id + "/" + std::to_string(key.rank));
      }
      cv_.notify_all();
      cv_.wait(lock, [&] { return open_; });
    };
  }
  void Attach(Store& store) { store_ = &store; }
  bool WaitForCalls(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return calls_.size() >= n; });
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  std::vector<std::map<StreamKey, uint64_t>> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::vector<std::string> acked_before_stored() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_before_stored_;
  }

 private:
  uint64_t HighestEval(const std::string& run_id) const {
    uint64_t high = 0;
    for (const auto& e : store_->ListEvals(run_id)) high = std::max(high, e.step());
    return high;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  Store* store_ = nullptr;
  bool open_ = false;
  std::vector<std::map<StreamKey, uint64_t>> calls_;
  std::vector<std::string> acked_before_stored_;
};

// A store with no commit interval, whose writer commits step 1 of `gate_run` and is then
// held inside that commit's callback until commits.Open(): what a test queues meanwhile goes
// in the commits after it. `commits` outlives the store, whose writer calls it.
struct HeldStore {
  HeldStore(const std::string& name, const std::string& gate_run, size_t max_batch = 0) {
    StoreOptions o{TempDb(name)};
    o.commit_interval_ms = 0;
    if (max_batch > 0) o.max_batch = max_batch;
    commits.Hook(o);
    store = std::make_unique<Store>(o);
    commits.Attach(*store);
    store->PutStep(gate_run, MakeStep(1));
  }

  Commits commits;
  std::unique_ptr<Store> store;
};

TEST(Store, one_transaction_takes_everything_queued_and_acks_each_stream_after_it) {
  HeldStore held("group", "gate");
  Commits& commits = held.commits;
  Store& store = *held.store;
  ASSERT_TRUE(commits.WaitForCalls(1));  // the writer is held inside the first commit

  for (uint64_t step = 1; step <= 250; ++step) {
    for (const char* run : {"a", "b", "c", "d"}) store.PutStep(run, MakeStep(step));
    if (step <= 50) store.PutStep("a", MakeStep(step), 1);
  }
  EXPECT_EQ(store.Lag(), 1051u);  // 1,050 queued and the gate's record, not yet counted
  EXPECT_EQ(commits.calls().size(), 1u) << "nothing is acknowledged before its commit";
  commits.Open();
  ASSERT_TRUE(store.Flush());

  auto calls = commits.calls();
  ASSERT_EQ(calls.size(), 2u) << "the 1,050 queued records went in one transaction";
  EXPECT_EQ(calls[1], (std::map<StreamKey, uint64_t>{
                          {{"a", 0}, 250}, {{"b", 0}, 250}, {{"c", 0}, 250}, {{"d", 0}, 250}, {{"a", 1}, 50}}));
  EXPECT_TRUE(commits.acked_before_stored().empty()) << "a stream was acknowledged before its steps were readable";
  EXPECT_EQ(store.StepCount("c"), std::make_pair(uint64_t{250}, uint64_t{250}));
  EXPECT_EQ(store.Lag(), 0u);
}

// An eval comes after its step's report; acknowledged with the step, it could be released by
// the trainer before its own commit. Its stream's evals have an acknowledgement of their own.
TEST(Store, acknowledges_a_streams_evals_apart_from_its_steps) {
  HeldStore held("evals", "r");
  Commits& commits = held.commits;
  Store& store = *held.store;
  ASSERT_TRUE(commits.WaitForCalls(1));  // held inside the first commit
  store.PutStep("r", MakeStep(2));
  v1::EvalReport eval;
  eval.set_step(2);
  eval.set_loss(0.25);
  store.PutEval("r", eval);
  store.PutStep("r", MakeStep(3));
  commits.Open();
  ASSERT_TRUE(store.Flush());
  auto calls = commits.calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0], (std::map<StreamKey, uint64_t>{{{"r", 0}, 1}})) << "no eval in the first commit";
  EXPECT_EQ(calls[1], (std::map<StreamKey, uint64_t>{{{"r", 0}, 3}, {{"r", 0, true}, 2}}));
  EXPECT_TRUE(commits.acked_before_stored().empty()) << "acknowledged before readable";
}

TEST(Store, splits_a_backlog_into_transactions_of_max_batch_in_order) {
  HeldStore held("slices", "r", /*max_batch=*/100);
  Commits& commits = held.commits;
  Store& store = *held.store;
  ASSERT_TRUE(commits.WaitForCalls(1));
  for (uint64_t step = 2; step <= 351; ++step) store.PutStep("r", MakeStep(step));
  commits.Open();
  ASSERT_TRUE(store.Flush());

  std::vector<uint64_t> highs;
  for (const auto& call : commits.calls()) highs.push_back(call.at({"r", 0}));
  EXPECT_EQ(highs, (std::vector<uint64_t>{1, 101, 201, 301, 351}));
  EXPECT_TRUE(commits.acked_before_stored().empty());
  EXPECT_EQ(store.StepCount("r"), std::make_pair(uint64_t{351}, uint64_t{351}));
}

// With an interval of ten minutes, only Flush() and the destructor can make these commits
// come soon; the bounds below are far above what either takes.
TEST(Store, flush_and_shutdown_do_not_wait_out_the_commit_interval) {
  StoreOptions o{TempDb("interval")};
  o.commit_interval_ms = 600'000;
  auto store = std::make_unique<Store>(o);
  store->PutStep("r", MakeStep(1));
  ASSERT_TRUE(store->Flush());  // the first take has no earlier commit to wait after
  auto start = steady_clock::now();
  store->PutStep("r", MakeStep(2));
  ASSERT_TRUE(store->Flush());
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(60));
  EXPECT_EQ(store->StepCount("r").second, 2u);

  store->PutStep("r", MakeStep(3));
  start = steady_clock::now();
  store.reset();
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(60));
  EXPECT_EQ(Store(o).StepCount("r"), std::make_pair(uint64_t{3}, uint64_t{3})) << "step 3 was committed on the way out";
}

}  // namespace
}  // namespace gradwatch::store
