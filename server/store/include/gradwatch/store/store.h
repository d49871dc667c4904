// The monitor's durable record: runs, every step with every reported field (per-layer
// norms included), eval reports, events and commands, in one SQLite file in WAL mode.
//
// Writes go through a single writer thread, so the stream path only enqueues. The writer
// commits by group: one transaction takes everything queued (up to max_batch records), and
// while records keep coming a transaction starts at most every commit_interval_ms, so that
// each commit (its WAL pages, its acknowledgements) carries many records rather than a few.
// Steps are idempotent on (run_id, rank, step) and evals on (run_id, step): a resent step
// is ignored. After each commit the writer calls the `on_committed` callback with the
// highest step stored per stream it touched.
//
// Data parallel: the `steps` table holds rank 0's reports, which carry the run-level
// values (a single-process run is rank 0); `rank_steps` holds the other ranks' reports,
// each whole, keyed (run_id, rank, step).
//
// Errors. Only the constructor throws (configuration time). After that the store survives
// SQLite's errors: a batch that cannot be written ("database is locked" by another
// process past the busy timeout, "database or disk is full") is rolled back, kept, and
// retried in order with a back-off until it commits; nothing is reported committed that
// is not, so the acknowledgements built on `on_committed` stop while the store fails and
// resume when it recovers. Records are still accepted meanwhile (Lag() shows the backlog)
// and Health() tells what is wrong. A read that fails logs and returns an empty result.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <thread>
#include <variant>
#include <vector>

#include "gradwatch/v1/runs.pb.h"

struct sqlite3;

namespace gradwatch::store {

class Stmt;  // a prepared SQLite statement (src/stmt.h)

// One telemetry stream of a run: its rank (0 for a single process), and whether the value
// is the stream's steps or its evals (acknowledged apart: see Ack in telemetry.proto).
struct StreamKey {
  std::string run_id;
  uint32_t rank = 0;
  bool evals = false;
  bool operator<(const StreamKey& o) const {
    return std::tie(rank, run_id, evals) < std::tie(o.rank, o.run_id, o.evals);
  }
  bool operator==(const StreamKey& o) const { return rank == o.rank && run_id == o.run_id && evals == o.evals; }
};

// Called on the writer thread after a batch commits: stream -> highest step stored (of a
// step report, or with `evals` of an eval report).
using CommittedFn = std::function<void(const std::map<StreamKey, uint64_t>&)>;
// Called on the writer thread after each failed write attempt, with the message
// ("<operation>: <SQLite's message>", e.g. "COMMIT: database or disk is full").
using ErrorFn = std::function<void(const std::string& message)>;

struct StoreOptions {
  std::string path;                 // the SQLite file; created with its folder
  size_t max_batch = 4096;          // records per transaction at most
  // Group commit: while records keep coming, a transaction starts at most this long after
  // the previous one began; a full batch, Flush() and the destructor do not wait for it.
  // Acknowledgements wait up to this long. 0 commits whatever is queued at once.
  int commit_interval_ms = 10;
  CommittedFn on_committed;         // may be empty
  ErrorFn on_error;                 // may be empty
  std::function<void()> on_recovered;  // the first commit after failures; writer thread; may be empty
  int busy_timeout_ms = 5000;       // how long a statement waits for another connection's lock
  int retry_initial_ms = 50;        // back-off after a failed write attempt, doubling each time...
  int retry_max_ms = 5000;          // ...up to this
  // The destructor drains the queue; while writes keep failing it gives up after this
  // long (plus at most one attempt, up to busy_timeout_ms) and logs what was not stored.
  int shutdown_timeout_ms = 10000;
};

// The store's health, as of the last write attempt.
struct StoreHealth {
  bool ok = true;                       // false from a failed write attempt until the next commit
  uint64_t consecutive_failures = 0;    // failed attempts since the last commit
  uint64_t total_errors = 0;            // failed write attempts since the store was opened
  uint64_t read_errors = 0;             // reads that failed and returned an empty result
  std::string last_error;               // the last failure's message (kept after recovery); "" if none
  int64_t failing_since_unix_ms = 0;    // the first failure of the current streak; 0 while ok
};

class Store {
 public:
  // Opens (creating if needed) the database. Throws std::runtime_error (or
  // std::filesystem::filesystem_error for its folder) naming the path and SQLite's message
  // when it cannot be opened or migrated, e.g. on a full disk. Nothing else throws.
  explicit Store(StoreOptions options);
  // Drains the queue, then closes. While writes fail it gives up after
  // shutdown_timeout_ms and logs how many records were not stored.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Enqueue writes; they are applied in call order by the writer thread.
  void PutRun(const v1::Run& run);  // insert or replace the run's header
  // The shared form keeps `step` as it is until the writer has stored it (no copy); the other
  // copies it.
  void PutStep(const std::string& run_id, std::shared_ptr<const v1::StepReport> step, uint32_t rank = 0);
  void PutStep(const std::string& run_id, const v1::StepReport& step, uint32_t rank = 0);
  void PutEval(const std::string& run_id, const v1::EvalReport& eval);
  void PutEvent(const v1::Event& event);
  void PutCommand(const v1::CommandRecord& record);  // insert or replace by command id

  // Blocks until everything enqueued before the call is committed and returns true; the
  // writer commits at once rather than at the end of the group-commit interval.
  // Returns false, without waiting further, once a write attempt fails (or at once while
  // the store is failing): see Health().
  bool Flush();
  // Records enqueued and not yet committed.
  size_t Lag() const;
  StoreHealth Health() const;

  // Reads (they see committed data only). On an error they log, count a read error and
  // return an empty result (for GetRun: nullopt; for StepCount: {0, 0}).
  std::vector<v1::Run> ListRuns() const;
  std::optional<v1::Run> GetRun(const std::string& run_id) const;
  std::vector<v1::StepReport> ListSteps(const std::string& run_id, uint64_t after_step,
                                        uint32_t limit) const;
  std::vector<v1::EvalReport> ListEvals(const std::string& run_id) const;
  std::vector<v1::Event> ListEvents(const std::string& run_id) const;
  std::vector<v1::CommandRecord> ListCommands(const std::string& run_id) const;
  // Distinct steps stored and the highest, for a run (rank 0's).
  std::pair<uint64_t, uint64_t> StepCount(const std::string& run_id) const;
  // Data parallel: the steps of rank >= 1, in step order, whole as reported.
  std::vector<v1::StepReport> ListRankSteps(const std::string& run_id, uint32_t rank, uint64_t after_step,
                                            uint32_t limit) const;
  // The highest step stored per rank >= 1 of a run (ranks with none are absent).
  std::map<uint32_t, uint64_t> RankHighs(const std::string& run_id) const;

 private:
  struct StepRow { std::string run_id; std::shared_ptr<const v1::StepReport> step; uint32_t rank = 0; };
  struct EvalRow { std::string run_id; v1::EvalReport eval; };
  using Record = std::variant<v1::Run, StepRow, EvalRow, v1::Event, v1::CommandRecord>;
  using SteadyTime = std::chrono::steady_clock::time_point;
  struct CloseDb { void operator()(sqlite3* db) const; };
  using Db = std::unique_ptr<sqlite3, CloseDb>;

  // Records [begin, end) of the writer's taken queue: one transaction.
  struct Batch {
    std::vector<Record>::const_iterator begin, end;
    size_t size() const { return static_cast<size_t>(end - begin); }
  };

  template <typename R> void Enqueue(R&& record);
  // Writer thread.
  void WriterLoop();
  bool TakeQueue(std::vector<Record>& taken);
  std::string WriteBatch(Batch batch, std::map<StreamKey, uint64_t>& stored);
  std::string Apply(const Record& record, std::map<StreamKey, uint64_t>& stored);
  void Committed(size_t records, const std::map<StreamKey, uint64_t>& stored);
  void Failed(const std::string& error, size_t batch);
  bool WaitToRetry(std::chrono::milliseconds backoff);
  void GiveUp(size_t batch);
  // Readers: logs and counts a failed read; returns `empty`.
  template <typename T> T ReadFailed(const char* what, const Stmt& q, T empty) const;

  StoreOptions options_;
  Db write_db_;                                       // before its statements: closed after them
  // Writer thread only: one prepared statement per record kind.
  std::unique_ptr<Stmt> insert_step_, insert_eval_, insert_rank_step_, put_run_, insert_event_, put_command_;
  Db read_db_;
  mutable std::mutex read_mu_;  // one reader connection, serialised

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable flushed_cv_;
  // Filled by Enqueue, swapped out whole by the writer (so pushes reuse its capacity).
  std::vector<Record> queue_;
  SteadyTime last_take_;    // when the writer last took the queue: the group-commit clock
  int flushing_ = 0;        // Flush() calls waiting: the writer does not wait out the interval
  uint64_t enqueued_ = 0;
  uint64_t committed_ = 0;
  bool stopping_ = false;
  SteadyTime stop_deadline_;  // set with stopping_
  StoreHealth health_;                  // its read_errors: see read_errors_
  mutable uint64_t read_errors_ = 0;    // counted by the (const) reads
  SteadyTime failing_since_;  // steady twin of health_.failing_since_unix_ms
  std::thread writer_;
};

}  // namespace gradwatch::store
