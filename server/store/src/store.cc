// The store's writer: a queue drained by one thread in batched transactions that are
// retried, never dropped, while SQLite fails.
#include "gradwatch/store/store.h"

#include <sqlite3.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "stmt.h"

namespace gradwatch::store {

namespace {

constexpr const char* kSchema = R"sql(
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  run BLOB NOT NULL               -- v1.Run, serialized
);
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER,
  loss REAL, learning_rate REAL, grad_norm REAL,
  layer_grad_norms BLOB,          -- float32 little-endian, in the run's layer order
  jaccard_soft REAL, jaccard_hard REAL, accuracy REAL,
  clip_kind INTEGER, clip_threshold REAL, step_seconds REAL, unix_millis INTEGER,
  update_skipped INTEGER, rolled_back_to INTEGER,
  extra BLOB,                     -- v1.StepReport with only its scalars and system metrics, serialized
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rank_steps (
  run_id TEXT NOT NULL, rank INTEGER NOT NULL, step INTEGER NOT NULL,
  report BLOB NOT NULL,           -- v1.StepReport, serialized
  PRIMARY KEY (run_id, rank, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evals (
  run_id TEXT NOT NULL, step INTEGER NOT NULL,
  loss REAL, jaccard_soft REAL, jaccard_hard REAL, accuracy REAL,
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT NOT NULL, step INTEGER, kind TEXT, severity INTEGER, message TEXT,
  event BLOB NOT NULL             -- v1.Event, serialized
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, step);
CREATE TABLE IF NOT EXISTS commands (
  command_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL, issued_unix_millis INTEGER, issued_by TEXT, reason TEXT,
  applied_at_step INTEGER,
  record BLOB NOT NULL            -- v1.CommandRecord, serialized
);
CREATE INDEX IF NOT EXISTS commands_by_run ON commands (run_id, issued_unix_millis);
)sql";

// A store written before steps had scalars and system metrics gains their column.
std::string AddExtraColumn(sqlite3* db) {
  sqlite3_stmt* q = nullptr;
  bool has = false;
  if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('steps') WHERE name = 'extra'", -1, &q, nullptr) ==
      SQLITE_OK) {
    has = sqlite3_step(q) == SQLITE_ROW;
  }
  sqlite3_finalize(q);
  return has ? "" : Exec(db, "ALTER TABLE steps ADD COLUMN extra BLOB", "cannot add the steps' extra column");
}

// The step's fields that have no column of their own; empty when it has none of them.
std::string ExtraOf(const v1::StepReport& s) {
  if (s.scalars_size() == 0 && !s.has_system()) return "";
  v1::StepReport extra;
  *extra.mutable_scalars() = s.scalars();
  if (s.has_system()) *extra.mutable_system() = s.system();
  return extra.SerializeAsString();
}

void ThrowIf(const std::string& error, const std::string& path) {
  if (!error.empty()) throw std::runtime_error("store: " + path + ": " + error);
}

sqlite3* Open(const std::string& path, int flags, int busy_timeout_ms) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw std::runtime_error("store: cannot open " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, busy_timeout_ms);
  return db;
}

// Optional metrics: absent is stored as NULL (read back as NaN, then left unset).
double Opt(bool has, double v) { return has ? v : std::nan(""); }

void Raise(std::map<StreamKey, uint64_t>& stored, const std::string& run_id, uint64_t step, uint32_t rank = 0,
           bool evals = false) {
  uint64_t& high = stored[StreamKey{run_id, rank, evals}];
  high = std::max(high, step);
}

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

void Store::CloseDb::operator()(sqlite3* db) const { sqlite3_close(db); }

Store::Store(StoreOptions options) : options_(std::move(options)) {
  const std::string& path = options_.path;
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  write_db_.reset(Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                       options_.busy_timeout_ms));
  ThrowIf(Exec(write_db_.get(), kSchema, "cannot create the schema"), path);
  ThrowIf(AddExtraColumn(write_db_.get()), path);
  // Every record goes through one of these: prepared once, reset after each row.
  sqlite3* db = write_db_.get();
  insert_step_ = std::make_unique<Stmt>(db, "INSERT OR IGNORE INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  insert_eval_ = std::make_unique<Stmt>(db, "INSERT OR IGNORE INTO evals VALUES (?,?,?,?,?,?)");
  insert_rank_step_ = std::make_unique<Stmt>(db, "INSERT OR IGNORE INTO rank_steps VALUES (?,?,?,?)");
  put_run_ = std::make_unique<Stmt>(db, "INSERT OR REPLACE INTO runs (run_id, run) VALUES (?, ?)");
  insert_event_ = std::make_unique<Stmt>(
      db, "INSERT INTO events (run_id, step, kind, severity, message, event) VALUES (?,?,?,?,?,?)");
  put_command_ = std::make_unique<Stmt>(db, "INSERT OR REPLACE INTO commands VALUES (?,?,?,?,?,?,?)");
  for (const auto* s : {&insert_step_, &insert_eval_, &insert_rank_step_, &put_run_, &insert_event_, &put_command_}) {
    if (!(*s)->prepared()) ThrowIf("cannot prepare an insert: " + (*s)->error(), path);
  }
  read_db_.reset(Open(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, options_.busy_timeout_ms));
  writer_ = std::thread([this] { WriterLoop(); });
}

Store::~Store() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    stop_deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.shutdown_timeout_ms);
  }
  cv_.notify_all();
  writer_.join();
}

// The writer waits for a first record, then (group commit) for the interval or a full
// batch: only those two moments wake it, not every record.
template <typename R>
void Store::Enqueue(R&& record) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.emplace_back(std::forward<R>(record));
  ++enqueued_;
  if (queue_.size() == 1 || queue_.size() == options_.max_batch) cv_.notify_one();
}

void Store::PutRun(const v1::Run& run) { Enqueue(run); }
void Store::PutStep(const std::string& run_id, std::shared_ptr<const v1::StepReport> step, uint32_t rank) {
  Enqueue(StepRow{run_id, std::move(step), rank});
}
void Store::PutStep(const std::string& run_id, const v1::StepReport& step, uint32_t rank) {
  PutStep(run_id, std::make_shared<const v1::StepReport>(step), rank);
}
void Store::PutEval(const std::string& run_id, const v1::EvalReport& eval) { Enqueue(EvalRow{run_id, eval}); }
void Store::PutEvent(const v1::Event& event) { Enqueue(event); }
void Store::PutCommand(const v1::CommandRecord& record) { Enqueue(record); }

bool Store::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t target = enqueued_;
  ++flushing_;
  cv_.notify_one();  // the writer stops waiting out the group-commit interval
  flushed_cv_.wait(lock, [&] { return committed_ >= target || !health_.ok; });
  --flushing_;
  return committed_ >= target;
}

size_t Store::Lag() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(enqueued_ - committed_);
}

StoreHealth Store::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  StoreHealth h = health_;
  h.read_errors = read_errors_;
  return h;
}

// Never throws: a failed batch is kept and retried in order until it commits, or until
// the destructor's deadline passes while it still fails. The queue is taken whole and
// written in transactions of up to max_batch records.
void Store::WriterLoop() {
  using std::chrono::milliseconds;
  const milliseconds first_backoff(std::max(options_.retry_initial_ms, 1)), max_backoff(options_.retry_max_ms);
  const size_t max_batch = std::max<size_t>(options_.max_batch, 1);
  std::vector<Record> taken;  // swapped out of queue_; [0, done) committed
  size_t done = 0;
  milliseconds backoff(0);
  for (;;) {
    if (done == taken.size()) {
      taken.clear();  // its capacity goes back to queue_ on the swap...
      if (taken.capacity() > 2 * max_batch) taken = {};  // ...unless a backlog grew it
      done = 0;
      if (!TakeQueue(taken)) return;  // stopping and drained
    }
    const Batch batch{taken.cbegin() + done, taken.cbegin() + done + std::min(taken.size() - done, max_batch)};
    std::map<StreamKey, uint64_t> stored;
    std::string error = WriteBatch(batch, stored);
    if (error.empty()) {
      Committed(batch.size(), stored);
      done += batch.size();
      backoff = milliseconds(0);
      continue;
    }
    Failed(error, taken.size() - done);
    backoff = std::min(std::max(backoff * 2, first_backoff), max_backoff);
    if (!WaitToRetry(backoff)) return GiveUp(taken.size() - done);
  }
}

// Swaps the whole queue into `taken` (empty): at once when stopping, flushing or holding a
// full batch, else once commit_interval_ms has passed since the last take. False when
// stopping and drained.
bool Store::TakeQueue(std::vector<Record>& taken) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  const auto due = last_take_ + std::chrono::milliseconds(options_.commit_interval_ms);
  cv_.wait_until(lock, due, [&] { return stopping_ || flushing_ > 0 || queue_.size() >= options_.max_batch; });
  if (queue_.empty()) return false;
  taken.swap(queue_);
  last_take_ = std::chrono::steady_clock::now();
  return true;
}

// One transaction. Returns "" once committed; else rolls back and returns the error.
std::string Store::WriteBatch(Batch batch, std::map<StreamKey, uint64_t>& stored) {
  sqlite3* db = write_db_.get();
  // IMMEDIATE takes the write lock up front: another writer shows as "database is locked"
  // here, after the busy timeout, rather than halfway through the batch.
  std::string error = Exec(db, "BEGIN IMMEDIATE", "BEGIN");
  for (auto it = batch.begin; error.empty() && it != batch.end; ++it) error = Apply(*it, stored);
  if (error.empty()) error = Exec(db, "COMMIT", "COMMIT");
  if (error.empty()) return "";
  stored.clear();
  // SQLite may have rolled back already (it does on some SQLITE_FULL/IOERR cases). A
  // ROLLBACK that fails leaves the transaction open; the next BEGIN fails and lands here.
  if (!sqlite3_get_autocommit(db)) Exec(db, "ROLLBACK", "ROLLBACK");
  return error;
}

std::string Store::Apply(const Record& record, std::map<StreamKey, uint64_t>& stored) {
  if (auto* run = std::get_if<v1::Run>(&record)) {
    return put_run_->Bind(1, run->run_id()).Bind(2, run->SerializeAsString()).Run("insert run " + run->run_id());
  }
  if (auto* row = std::get_if<StepRow>(&record)) {
    static_assert(sizeof(float) == 4);
    const auto& s = *row->step;
    Raise(stored, row->run_id, s.step(), row->rank);
    if (row->rank != 0) {
      const std::string report = s.SerializeAsString();
      return insert_rank_step_->BindRef(1, row->run_id).Bind(2, int64_t{row->rank}).Bind(3, s.step())
          .BindBlobRef(4, report.data(), report.size()).Run("insert rank step");
    }
    const std::string extra = ExtraOf(s);
    // The row's text and blobs are bound without a copy: `row` and `extra` outlive Run().
    return insert_step_->BindRef(1, row->run_id).Bind(2, s.step()).Bind(3, int64_t{s.epoch()}).Bind(4, s.loss())
        .Bind(5, s.learning_rate()).Bind(6, s.grad_norm())
        .BindBlobRef(7, s.layer_grad_norms().data(), s.layer_grad_norms_size() * sizeof(float))
        .Bind(8, Opt(s.has_jaccard_soft(), s.jaccard_soft()))
        .Bind(9, Opt(s.has_jaccard_hard(), s.jaccard_hard()))
        .Bind(10, Opt(s.has_accuracy(), s.accuracy()))
        .Bind(11, int64_t{s.clipping().kind()}).Bind(12, s.clipping().threshold())
        .Bind(13, s.step_seconds()).Bind(14, s.unix_millis())
        .Bind(15, int64_t{s.update_skipped()}).Bind(16, s.rolled_back_to())
        .BindBlobRef(17, extra.data(), extra.size())
        .Run("insert step");
  }
  if (auto* row = std::get_if<EvalRow>(&record)) {
    const auto& e = row->eval;
    Raise(stored, row->run_id, e.step(), 0, /*evals=*/true);
    return insert_eval_->BindRef(1, row->run_id).Bind(2, e.step()).Bind(3, e.loss())
        .Bind(4, Opt(e.has_jaccard_soft(), e.jaccard_soft()))
        .Bind(5, Opt(e.has_jaccard_hard(), e.jaccard_hard()))
        .Bind(6, Opt(e.has_accuracy(), e.accuracy())).Run("insert eval");
  }
  if (auto* ev = std::get_if<v1::Event>(&record)) {
    return insert_event_->Bind(1, ev->run_id()).Bind(2, ev->step()).Bind(3, ev->kind())
        .Bind(4, int64_t{ev->severity()}).Bind(5, ev->message())
        .Bind(6, ev->SerializeAsString()).Run("insert event");
  }
  const auto& cmd = std::get<v1::CommandRecord>(record);
  return put_command_->Bind(1, cmd.command().id()).Bind(2, cmd.run_id()).Bind(3, cmd.issued_unix_millis())
      .Bind(4, cmd.command().issued_by()).Bind(5, cmd.command().reason())
      .Bind(6, cmd.ack().applied_at_step()).Bind(7, cmd.SerializeAsString()).Run("insert command");
}

void Store::Committed(size_t records, const std::map<StreamKey, uint64_t>& stored) {
  uint64_t failures = 0;
  double seconds = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!health_.ok) {
      failures = health_.consecutive_failures;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - failing_since_).count();
      health_.ok = true;
      health_.consecutive_failures = 0;
      health_.failing_since_unix_ms = 0;
    }
  }
  if (failures > 0) {
    std::fprintf(stderr, "store: %s: writing again after %llu failed attempts over %.1f s\n",
                 options_.path.c_str(), static_cast<unsigned long long>(failures), seconds);
    if (options_.on_recovered) options_.on_recovered();
  }
  // Callback first, so that Flush() returning means the acks went out too.
  if (options_.on_committed && !stored.empty()) options_.on_committed(stored);
  {
    std::lock_guard<std::mutex> lock(mu_);
    committed_ += records;
  }
  flushed_cv_.notify_all();
}

void Store::Failed(const std::string& error, size_t batch) {
  bool first = false;
  size_t queued = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    first = health_.ok;
    if (first) {
      failing_since_ = std::chrono::steady_clock::now();
      health_.failing_since_unix_ms = UnixMillisNow();
    }
    health_.ok = false;
    ++health_.consecutive_failures;
    ++health_.total_errors;
    health_.last_error = error;
    queued = queue_.size();
  }
  flushed_cv_.notify_all();  // Flush() stops waiting
  if (first) {
    std::fprintf(stderr,
                 "store: %s: cannot write (%s); keeping %zu record(s) and retrying, acknowledgements wait\n",
                 options_.path.c_str(), error.c_str(), batch + queued);
  }
  if (options_.on_error) options_.on_error(error);
}

// Waits out the back-off (the destructor cuts it short). False once the store is stopping
// and its deadline has passed.
bool Store::WaitToRetry(std::chrono::milliseconds backoff) {
  std::unique_lock<std::mutex> lock(mu_);
  auto now = std::chrono::steady_clock::now();
  if (stopping_ && now >= stop_deadline_) return false;
  auto until = now + backoff;
  if (stopping_) until = std::min(until, stop_deadline_);
  bool was_stopping = stopping_;
  cv_.wait_until(lock, until, [&] { return stopping_ != was_stopping; });
  return true;
}

void Store::GiveUp(size_t batch) {
  std::lock_guard<std::mutex> lock(mu_);
  std::fprintf(stderr,
               "store: %s: GIVING UP at shutdown after %llu failed attempts: %zu record(s) NOT STORED "
               "(last error: %s)\n",
               options_.path.c_str(), static_cast<unsigned long long>(health_.consecutive_failures),
               batch + queue_.size(), health_.last_error.c_str());
}

}  // namespace gradwatch::store
