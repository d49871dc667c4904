// The monitor's durable record: runs, every step with every reported field (per-layer
// norms included), eval reports, events and commands, in one SQLite file in WAL mode.
//
// Writes go through a single writer thread that commits in batches (one transaction per
// batch), so the stream path only enqueues. Steps and evals are idempotent on
// (run_id, step): a resent step is ignored. After each commit the writer calls the
// `on_committed` callback with the highest step stored per run it touched.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "gradwatch/v1/runs.pb.h"

struct sqlite3;

namespace gradwatch::store {

class Stmt;  // a prepared SQLite statement (store.cc)

// Called on the writer thread after a batch commits: run_id -> highest step stored
// (a step, or an eval taken at that step).
using CommittedFn = std::function<void(const std::map<std::string, uint64_t>&)>;

struct StoreOptions {
  std::string path;                 // the SQLite file; created with its folder
  size_t max_batch = 512;           // records per transaction at most
  CommittedFn on_committed;         // may be empty
};

class Store {
 public:
  // Opens (creating if needed) the database. Throws std::runtime_error naming the
  // path and SQLite's message when it cannot be opened or migrated.
  explicit Store(StoreOptions options);
  ~Store();  // drains the queue, then closes
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Enqueue writes; they are applied in call order by the writer thread.
  void PutRun(const v1::Run& run);  // insert or replace the run's header
  void PutStep(const std::string& run_id, const v1::StepReport& step);
  void PutEval(const std::string& run_id, const v1::EvalReport& eval);
  void PutEvent(const v1::Event& event);
  void PutCommand(const v1::CommandRecord& record);  // insert or replace by command id

  // Blocks until everything enqueued before the call is committed.
  void Flush();
  // Records enqueued and not yet committed.
  size_t Lag() const;

  // Reads (they see committed data only).
  std::vector<v1::Run> ListRuns() const;
  std::optional<v1::Run> GetRun(const std::string& run_id) const;
  std::vector<v1::StepReport> ListSteps(const std::string& run_id, uint64_t after_step,
                                        uint32_t limit) const;
  std::vector<v1::EvalReport> ListEvals(const std::string& run_id) const;
  std::vector<v1::Event> ListEvents(const std::string& run_id) const;
  std::vector<v1::CommandRecord> ListCommands(const std::string& run_id) const;
  // Distinct steps stored and the highest, for a run.
  std::pair<uint64_t, uint64_t> StepCount(const std::string& run_id) const;

 private:
  struct StepRow { std::string run_id; v1::StepReport step; };
  struct EvalRow { std::string run_id; v1::EvalReport eval; };
  using Record = std::variant<v1::Run, StepRow, EvalRow, v1::Event, v1::CommandRecord>;

  void WriterLoop();
  void Apply(const Record& record, std::map<std::string, uint64_t>& stored);
  void Exec(const char* sql) const;

  StoreOptions options_;
  sqlite3* write_db_ = nullptr;
  std::unique_ptr<Stmt> insert_step_, insert_eval_;  // writer thread only
  sqlite3* read_db_ = nullptr;
  mutable std::mutex read_mu_;  // one reader connection, serialised

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable flushed_cv_;
  std::deque<Record> queue_;
  uint64_t enqueued_ = 0;
  uint64_t committed_ = 0;
  bool stopping_ = false;
  std::thread writer_;
};

}  // namespace gradwatch::store
