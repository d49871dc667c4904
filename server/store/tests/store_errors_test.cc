// The store survives SQLite's errors: another process holding the write lock, a full
// disk, unreadable data. Waits are on the store's callbacks with a deadline, never sleeps.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "gradwatch/store/store.h"

namespace gradwatch::store {
namespace {

using std::chrono::steady_clock;
using Millis = std::chrono::duration<double, std::milli>;

std::string TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("gradwatch-store-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

v1::StepReport MakeStep(uint64_t step, int layers = 2) {
  v1::StepReport s;
  s.set_step(step);
  s.set_loss(1.0 / step);
  for (int i = 0; i < layers; ++i) s.add_layer_grad_norms(0.5f + i);
  return s;
}

v1::Event MakeEvent(const std::string& run_id, uint64_t step) {
  v1::Event ev;
  ev.set_run_id(run_id);
  ev.set_step(step);
  ev.set_kind("e" + std::to_string(step));
  return ev;
}

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// What the store reports through its callbacks; tests wait on it with a deadline.
class Recorder {
 public:
  void Hook(StoreOptions& o) {
    o.on_committed = [this](const std::map<StreamKey, uint64_t>& stored) {
      Update([&] {
        for (const auto& [key, step] : stored) acked_[key.run_id] = std::max(acked_[key.run_id], step);
      });
    };
    o.on_error = [this](const std::string& message) { Update([&] { errors_.push_back(message); }); };
    o.on_recovered = [this] { Update([&] { ++recoveries_; }); };
  }
  // Waits up to 30 s (sanitizer builds are slow) for pred() under the lock.
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), pred);
  }
  uint64_t Acked(const std::string& run) {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_[run];
  }
  size_t Errors() {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_.size();
  }
  int Recoveries() {
    std::lock_guard<std::mutex> lock(mu_);
    return recoveries_;
  }
  // For WaitFor predicates (the lock is held).
  uint64_t acked_locked(const std::string& run) { return acked_[run]; }
  size_t errors_locked() const { return errors_.size(); }

 private:
  template <typename Fn>
  void Update(Fn fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn();
    }
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, uint64_t> acked_;
  std::vector<std::string> errors_;
  int recoveries_ = 0;
};

// A second connection holding the write lock, as another process would.
class WriteLock {
 public:
  explicit WriteLock(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
    sqlite3_busy_timeout(db_, 10000);
    EXPECT_EQ(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
  }
  ~WriteLock() {
    Release();
    sqlite3_close(db_);
  }
  void Release() {
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

 private:
  sqlite3* db_ = nullptr;
};

TEST(Store, holds_acks_while_another_process_locks_the_database_and_resumes_in_order) {
  Recorder rec;
  StoreOptions o{TempDir("locked") + "/gradwatch.db"};
  o.busy_timeout_ms = 50;
  rec.Hook(o);
  Store store(o);
  store.PutStep("r", MakeStep(1));
  ASSERT_TRUE(store.Flush());

  WriteLock other(o.path);
  for (uint64_t i = 2; i <= 6; ++i) {
    store.PutStep("r", MakeStep(i));
    store.PutEvent(MakeEvent("r", i));
  }
  ASSERT_TRUE(rec.WaitFor([&] { return rec.errors_locked() >= 3; })) << "no retries reported";
  EXPECT_EQ(rec.Acked("r"), 1u) << "acknowledged steps that are not stored";
  StoreHealth h = store.Health();
  EXPECT_FALSE(h.ok);
  EXPECT_TRUE(Contains(h.last_error, "locked") || Contains(h.last_error, "busy")) << h.last_error;
  EXPECT_GE(h.consecutive_failures, 3u);
  EXPECT_GE(h.total_errors, 3u);
  EXPECT_GT(h.failing_since_unix_ms, 0);
  EXPECT_EQ(store.Lag(), 10u);
  EXPECT_FALSE(store.Flush()) << "Flush must not wait on a failing store";
  EXPECT_EQ(store.StepCount("r").first, 1u) << "reads still work";

  auto released = steady_clock::now();
  other.Release();
  ASSERT_TRUE(rec.WaitFor([&] { return rec.acked_locked("r") == 6; }));
  std::printf("first ack %.0f ms after the lock was released (after %llu failed attempts)\n",
              Millis(steady_clock::now() - released).count(),
              static_cast<unsigned long long>(store.Health().total_errors));
  ASSERT_TRUE(store.Flush());
  h = store.Health();
  EXPECT_TRUE(h.ok);
  EXPECT_EQ(h.consecutive_failures, 0u);
  EXPECT_EQ(h.failing_since_unix_ms, 0);
  EXPECT_TRUE(Contains(h.last_error, "locked")) << "the last error is kept for the record";
  EXPECT_EQ(rec.Recoveries(), 1);
  EXPECT_EQ(store.Lag(), 0u);
  auto steps = store.ListSteps("r", 0, 100);
  ASSERT_EQ(steps.size(), 6u);
  for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i].step(), i + 1);
  auto events = store.ListEvents("r");  // events are not idempotent: a batch stored twice shows
  ASSERT_EQ(events.size(), 5u);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].kind(), "e" + std::to_string(i + 2));
}

TEST(Store, gives_up_at_shutdown_within_its_timeout_while_the_database_stays_locked) {
  Recorder rec;
  StoreOptions o{TempDir("shutdown") + "/gradwatch.db"};
  o.busy_timeout_ms = 20;
  o.shutdown_timeout_ms = 200;
  rec.Hook(o);
  auto store = std::make_unique<Store>(o);
  store->PutStep("r", MakeStep(1));
  ASSERT_TRUE(store->Flush());
  WriteLock other(o.path);
  store->PutStep("r", MakeStep(2));
  ASSERT_TRUE(rec.WaitFor([&] { return rec.errors_locked() >= 1; }));
  auto start = steady_clock::now();
  store.reset();
  double ms = Millis(steady_clock::now() - start).count();
  std::printf("destructor gave up after %.0f ms (shutdown_timeout_ms 200)\n", ms);
  EXPECT_LT(ms, 5000);
  EXPECT_EQ(rec.Acked("r"), 1u);
  other.Release();
  EXPECT_EQ(Store(o).StepCount("r"), std::make_pair(uint64_t{1}, uint64_t{1})) << "step 2 was not stored";
}

// Every read of a store whose tables were dropped by another connection: a statement that
// cannot be prepared.
TEST(Store, reads_return_empty_and_count_errors_when_statements_cannot_be_prepared) {
  StoreOptions o{TempDir("dropped") + "/gradwatch.db"};
  Store store(o);
  store.PutStep("r", MakeStep(1));
  ASSERT_TRUE(store.Flush());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(o.path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE steps; DROP TABLE runs; DROP TABLE evals; DROP TABLE events;"
                             " DROP TABLE commands;", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  EXPECT_TRUE(store.ListRuns().empty());
  EXPECT_FALSE(store.GetRun("r").has_value());
  EXPECT_TRUE(store.ListSteps("r", 0, 10).empty());
  EXPECT_TRUE(store.ListEvals("r").empty());
  EXPECT_TRUE(store.ListEvents("r").empty());
  EXPECT_TRUE(store.ListCommands("r").empty());
  EXPECT_EQ(store.StepCount("r"), std::make_pair(uint64_t{0}, uint64_t{0}));
  EXPECT_EQ(store.Health().read_errors, 7u);
  EXPECT_TRUE(store.Health().ok) << "read errors do not make the writes unhealthy";
}

// A corrupted file: the statements prepare, stepping fails.
TEST(Store, reads_of_a_corrupted_file_return_empty_instead_of_throwing) {
  StoreOptions o{TempDir("corrupt") + "/gradwatch.db"};
  {
    Store store(o);
    for (uint64_t i = 1; i <= 300; ++i) store.PutStep("r", MakeStep(i, 64));
  }  // the last connection checkpoints the WAL into the file
  {
    std::fstream f(o.path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    std::string garbage(static_cast<size_t>(f.tellg()) - 4096, '\x5a');
    f.seekp(4096);  // page 1 (the schema) stays; every table's pages are garbage
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  Store store(o);
  EXPECT_TRUE(store.ListSteps("r", 0, 1000).empty());
  EXPECT_EQ(store.StepCount("r"), std::make_pair(uint64_t{0}, uint64_t{0}));
  EXPECT_TRUE(store.ListRuns().empty());
  EXPECT_EQ(store.Health().read_errors, 3u);
}

// A small tmpfs for one test, unmounted when it goes (declare it before the Store). Needs
// root; why() says why not when it could not be mounted.
class SmallDisk {
 public:
  SmallDisk() : dir_(TempDir("tmpfs")) {
    if (::geteuid() != 0) {
      why_ = "needs root to mount a small tmpfs";
    } else if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=512k") != 0) {
      why_ = "cannot mount a tmpfs on " + dir_ + ": " + std::strerror(errno);
    }
  }
  ~SmallDisk() {
    if (why_.empty()) {
      EXPECT_EQ(::umount2(dir_.c_str(), MNT_DETACH), 0) << std::strerror(errno);
    }
    std::filesystem::remove_all(dir_);
  }
  const std::string& why() const { return why_; }  // "" once mounted
  const std::string& dir() const { return dir_; }
  bool Resize(const char* size) {
    return ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, (std::string("size=") + size).c_str()) == 0;
  }

 private:
  std::string dir_, why_;
};

TEST(Store, holds_acks_while_the_disk_is_full_and_stores_every_step_once_after_space_is_freed) {
  SmallDisk disk;
  if (!disk.why().empty()) GTEST_SKIP() << disk.why();
  Recorder rec;
  StoreOptions o{disk.dir() + "/gradwatch.db"};
  o.retry_max_ms = 200;
  rec.Hook(o);
  Store store(o);
  uint64_t last = 0;
  while (last < 1000) {  // ~16 KiB a step: the disk fills within ~30
    store.PutStep("r", MakeStep(++last, 4000));
    if (!store.Flush()) break;
  }
  ASSERT_FALSE(store.Health().ok) << "512 KiB did not fill up";
  for (int i = 0; i < 5; ++i) store.PutStep("r", MakeStep(++last, 4000));
  size_t errors = rec.Errors();
  ASSERT_TRUE(rec.WaitFor([&] { return rec.errors_locked() >= errors + 2; })) << "no retries";
  uint64_t acked = rec.Acked("r");
  EXPECT_LT(acked, last - 5);
  EXPECT_EQ(store.StepCount("r").second, acked) << "acks match what is stored";
  StoreHealth h = store.Health();
  EXPECT_FALSE(h.ok);
  EXPECT_TRUE(Contains(h.last_error, "full")) << h.last_error;

  ASSERT_TRUE(disk.Resize("8m")) << std::strerror(errno);
  auto freed = steady_clock::now();
  ASSERT_TRUE(rec.WaitFor([&] { return rec.acked_locked("r") == last; }));
  std::printf("first ack up to step %llu %.0f ms after space was freed\n",
              static_cast<unsigned long long>(last), Millis(steady_clock::now() - freed).count());
  EXPECT_TRUE(store.Health().ok);
  EXPECT_EQ(store.StepCount("r"), std::make_pair(last, last)) << "every step stored once";
}

// Fills the disk under `dir` with a file of 1 KiB blocks until the write fails.
void Fill(const std::string& dir) {
  std::ofstream fill(dir + "/filler", std::ios::binary);
  std::string block(1024, 'x');
  while (fill.write(block.data(), static_cast<std::streamsize>(block.size())) && fill.flush()) {
  }
}

TEST(Store, opening_on_a_full_disk_throws_an_error_naming_the_path) {
  SmallDisk disk;
  if (!disk.why().empty()) GTEST_SKIP() << disk.why();
  Fill(disk.dir());
  std::string path = disk.dir() + "/gradwatch.db";
  try {
    Store store({path});
    FAIL() << "opened a store on a full disk";
  } catch (const std::runtime_error& e) {
    std::printf("%s\n", e.what());
    EXPECT_TRUE(Contains(e.what(), path)) << e.what();
    EXPECT_TRUE(Contains(e.what(), "full")) << e.what();
  }
}

// The monitor restarted on a disk that is still full: a clean error (the daemon exits 1
// with it), not an abort. SQLite cannot create the WAL index, so even reads are refused.
TEST(Store, reopening_on_a_still_full_disk_throws_an_error_naming_the_path) {
  SmallDisk disk;
  if (!disk.why().empty()) GTEST_SKIP() << disk.why();
  StoreOptions o{disk.dir() + "/gradwatch.db"};
  {
    Store store(o);
    store.PutStep("r", MakeStep(1));
  }
  Fill(disk.dir());
  try {
    Store store(o);
    FAIL() << "reopened a store on a full disk";
  } catch (const std::runtime_error& e) {
    std::printf("%s\n", e.what());
    EXPECT_TRUE(Contains(e.what(), o.path)) << e.what();
  }
}

}  // namespace
}  // namespace gradwatch::store
