#include "gradwatch/store/store.h"

#include <sqlite3.h>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include <cstring>

namespace gradwatch::store {

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      throw std::runtime_error(std::string("store: cannot prepare statement: ") + sqlite3_errmsg(db));
    }
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, double v) { sqlite3_bind_double(stmt_, i, v); return *this; }
  Stmt& Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); return *this; }
  Stmt& Bind(int i, uint64_t v) { return Bind(i, static_cast<int64_t>(v)); }
  Stmt& BindBlob(int i, const void* data, size_t n) {
    sqlite3_bind_blob(stmt_, i, data, static_cast<int>(n), SQLITE_TRANSIENT);
    return *this;
  }
  // Steps once; true while rows remain.
  bool Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) {
      throw std::runtime_error(std::string("store: ") + sqlite3_errmsg(db_));
    }
    return false;
  }
  // Steps once and resets, also when the step fails: a cached statement stays usable.
  void Run() {
    struct Reset {
      sqlite3_stmt* s;
      ~Reset() { sqlite3_reset(s); sqlite3_clear_bindings(s); }
    } reset{stmt_};
    Step();
  }

  // SQLite stores a bound NaN as NULL; NULL reads back as NaN (no column here is NULL otherwise).
  double Double(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nan("");
    return sqlite3_column_double(stmt_, col);
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Blob(int col) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p ? std::string(p, sqlite3_column_bytes(stmt_, col)) : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

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
  PRIMARY KEY (run_id, step)
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

sqlite3* Open(const std::string& path, int flags) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw std::runtime_error("store: cannot open " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

// Optional metrics: absent is stored as NULL (read back as NaN, then left unset).
double Opt(bool has, double v) { return has ? v : std::nan(""); }
template <typename Fn>
void SetIf(double v, Fn set) {
  if (!std::isnan(v)) set(v);
}

template <typename Msg>
Msg Parse(const std::string& bytes) {
  Msg m;
  m.ParseFromString(bytes);
  return m;
}

}  // namespace

Store::Store(StoreOptions options) : options_(std::move(options)) {
  auto parent = std::filesystem::path(options_.path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  write_db_ = Open(options_.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
  Exec(kSchema);
  // Every step and eval goes through these: prepared once, reset after each row.
  insert_step_ = std::make_unique<Stmt>(write_db_, "INSERT OR IGNORE INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  insert_eval_ = std::make_unique<Stmt>(write_db_, "INSERT OR IGNORE INTO evals VALUES (?,?,?,?,?,?)");
  read_db_ = Open(options_.path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
  writer_ = std::thread([this] { WriterLoop(); });
}

Store::~Store() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  writer_.join();
  insert_step_.reset();
  insert_eval_.reset();
  sqlite3_close(read_db_);
  sqlite3_close(write_db_);
}

void Store::Exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(write_db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error("store: " + options_.path + ": " + msg);
  }
}

void Store::PutRun(const v1::Run& run) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.emplace_back(run);
  ++enqueued_;
  cv_.notify_one();
}

void Store::PutStep(const std::string& run_id, const v1::StepReport& step) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.emplace_back(StepRow{run_id, step});
  ++enqueued_;
  cv_.notify_one();
}

void Store::PutEval(const std::string& run_id, const v1::EvalReport& eval) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.emplace_back(EvalRow{run_id, eval});
  ++enqueued_;
  cv_.notify_one();
}

void Store::PutEvent(const v1::Event& event) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.emplace_back(event);
  ++enqueued_;
  cv_.notify_one();
}

void Store::PutCommand(const v1::CommandRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.emplace_back(record);
  ++enqueued_;
  cv_.notify_one();
}

void Store::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t target = enqueued_;
  flushed_cv_.wait(lock, [&] { return committed_ >= target; });
}

size_t Store::Lag() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(enqueued_ - committed_);
}

void Store::WriterLoop() {
  std::vector<Record> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      size_t n = std::min(queue_.size(), options_.max_batch);
      batch.assign(std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + n);
    }
    std::map<std::string, uint64_t> stored;
    Exec("BEGIN");
    for (const auto& record : batch) Apply(record, stored);
    Exec("COMMIT");
    // Callback first, so that Flush() returning means the acks went out too.
    if (options_.on_committed && !stored.empty()) options_.on_committed(stored);
    {
      std::lock_guard<std::mutex> lock(mu_);
      committed_ += batch.size();
    }
    flushed_cv_.notify_all();
    batch.clear();
  }
}

void Store::Apply(const Record& record, std::map<std::string, uint64_t>& stored) {
  if (auto* run = std::get_if<v1::Run>(&record)) {
    Stmt(write_db_, "INSERT OR REPLACE INTO runs (run_id, run) VALUES (?, ?)")
        .Bind(1, run->run_id()).Bind(2, run->SerializeAsString()).Run();
  } else if (auto* row = std::get_if<StepRow>(&record)) {
    static_assert(sizeof(float) == 4);
    const auto& s = row->step;
    insert_step_->Bind(1, row->run_id).Bind(2, s.step()).Bind(3, int64_t{s.epoch()}).Bind(4, s.loss())
        .Bind(5, s.learning_rate()).Bind(6, s.grad_norm())
        .BindBlob(7, s.layer_grad_norms().data(), s.layer_grad_norms_size() * sizeof(float))
        .Bind(8, Opt(s.has_jaccard_soft(), s.jaccard_soft()))
        .Bind(9, Opt(s.has_jaccard_hard(), s.jaccard_hard()))
        .Bind(10, Opt(s.has_accuracy(), s.accuracy()))
        .Bind(11, int64_t{s.clipping().kind()}).Bind(12, s.clipping().threshold())
        .Bind(13, s.step_seconds()).Bind(14, s.unix_millis())
        .Bind(15, int64_t{s.update_skipped()}).Bind(16, s.rolled_back_to()).Run();
    uint64_t& high = stored[row->run_id];
    high = std::max(high, s.step());
  } else if (auto* row = std::get_if<EvalRow>(&record)) {
    const auto& e = row->eval;
    insert_eval_->Bind(1, row->run_id).Bind(2, e.step()).Bind(3, e.loss())
        .Bind(4, Opt(e.has_jaccard_soft(), e.jaccard_soft()))
        .Bind(5, Opt(e.has_jaccard_hard(), e.jaccard_hard()))
        .Bind(6, Opt(e.has_accuracy(), e.accuracy())).Run();
    uint64_t& high = stored[row->run_id];  // an eval is acknowledged like its step
    high = std::max(high, e.step());
  } else if (auto* ev = std::get_if<v1::Event>(&record)) {
    Stmt(write_db_,
         "INSERT INTO events (run_id, step, kind, severity, message, event) VALUES (?,?,?,?,?,?)")
        .Bind(1, ev->run_id()).Bind(2, ev->step()).Bind(3, ev->kind())
        .Bind(4, int64_t{ev->severity()}).Bind(5, ev->message())
        .Bind(6, ev->SerializeAsString()).Run();
  } else if (auto* cmd = std::get_if<v1::CommandRecord>(&record)) {
    Stmt(write_db_, "INSERT OR REPLACE INTO commands VALUES (?,?,?,?,?,?,?)")
        .Bind(1, cmd->command().id()).Bind(2, cmd->run_id()).Bind(3, cmd->issued_unix_millis())
        .Bind(4, cmd->command().issued_by()).Bind(5, cmd->command().reason())
        .Bind(6, cmd->ack().applied_at_step()).Bind(7, cmd->SerializeAsString()).Run();
  }
}

std::vector<v1::Run> Store::ListRuns() const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_, "SELECT run FROM runs ORDER BY run_id");
  std::vector<v1::Run> out;
  while (q.Step()) out.push_back(Parse<v1::Run>(q.Blob(0)));
  return out;
}

std::optional<v1::Run> Store::GetRun(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_, "SELECT run FROM runs WHERE run_id = ?");
  q.Bind(1, run_id);
  if (!q.Step()) return std::nullopt;
  return Parse<v1::Run>(q.Blob(0));
}

std::vector<v1::StepReport> Store::ListSteps(const std::string& run_id, uint64_t after_step,
                                             uint32_t limit) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_,
         "SELECT step, epoch, loss, learning_rate, grad_norm, layer_grad_norms, jaccard_soft,"
         " jaccard_hard, accuracy, clip_kind, clip_threshold, step_seconds, unix_millis,"
         " update_skipped, rolled_back_to FROM steps WHERE run_id = ? AND step > ?"
         " ORDER BY step LIMIT ?");
  q.Bind(1, run_id).Bind(2, after_step).Bind(3, int64_t{limit});
  std::vector<v1::StepReport> out;
  while (q.Step()) {
    v1::StepReport s;
    s.set_step(q.Int(0));
    s.set_epoch(static_cast<uint32_t>(q.Int(1)));
    s.set_loss(q.Double(2));
    s.set_learning_rate(q.Double(3));
    s.set_grad_norm(q.Double(4));
    std::string blob = q.Blob(5);
    s.mutable_layer_grad_norms()->Resize(static_cast<int>(blob.size() / sizeof(float)), 0.f);
    std::memcpy(s.mutable_layer_grad_norms()->mutable_data(), blob.data(), blob.size());
    SetIf(q.Double(6), [&](double v) { s.set_jaccard_soft(v); });
    SetIf(q.Double(7), [&](double v) { s.set_jaccard_hard(v); });
    SetIf(q.Double(8), [&](double v) { s.set_accuracy(v); });
    s.mutable_clipping()->set_kind(static_cast<v1::Clipping::Kind>(q.Int(9)));
    s.mutable_clipping()->set_threshold(q.Double(10));
    s.set_step_seconds(q.Double(11));
    s.set_unix_millis(q.Int(12));
    s.set_update_skipped(q.Int(13) != 0);
    s.set_rolled_back_to(q.Int(14));
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<v1::EvalReport> Store::ListEvals(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_,
         "SELECT step, loss, jaccard_soft, jaccard_hard, accuracy FROM evals WHERE run_id = ?"
         " ORDER BY step");
  q.Bind(1, run_id);
  std::vector<v1::EvalReport> out;
  while (q.Step()) {
    v1::EvalReport e;
    e.set_step(q.Int(0));
    e.set_loss(q.Double(1));
    SetIf(q.Double(2), [&](double v) { e.set_jaccard_soft(v); });
    SetIf(q.Double(3), [&](double v) { e.set_jaccard_hard(v); });
    SetIf(q.Double(4), [&](double v) { e.set_accuracy(v); });
    out.push_back(e);
  }
  return out;
}

std::vector<v1::Event> Store::ListEvents(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_, "SELECT event FROM events WHERE run_id = ? ORDER BY step, id");
  q.Bind(1, run_id);
  std::vector<v1::Event> out;
  while (q.Step()) out.push_back(Parse<v1::Event>(q.Blob(0)));
  return out;
}

std::vector<v1::CommandRecord> Store::ListCommands(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_,
         "SELECT record FROM commands WHERE run_id = ? ORDER BY issued_unix_millis, command_id");
  q.Bind(1, run_id);
  std::vector<v1::CommandRecord> out;
  while (q.Step()) out.push_back(Parse<v1::CommandRecord>(q.Blob(0)));
  return out;
}

std::pair<uint64_t, uint64_t> Store::StepCount(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_, "SELECT COUNT(*), COALESCE(MAX(step), 0) FROM steps WHERE run_id = ?");
  q.Bind(1, run_id);
  q.Step();
  return {static_cast<uint64_t>(q.Int(0)), static_cast<uint64_t>(q.Int(1))};
}

}  // namespace gradwatch::store
