// The store's reads: one read-only connection, serialised. A read that fails logs, counts
// a read error (Health().read_errors) and returns an empty result; it never throws, since
// it runs in gRPC and HTTP handlers.
#include <sqlite3.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "gradwatch/store/store.h"
#include "stmt.h"

namespace gradwatch::store {

namespace {

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

v1::StepReport StepOf(const Stmt& q) {
  v1::StepReport s;
  s.set_step(q.Int(0));
  s.set_epoch(static_cast<uint32_t>(q.Int(1)));
  s.set_loss(q.Double(2));
  s.set_learning_rate(q.Double(3));
  s.set_grad_norm(q.Double(4));
  std::string blob = q.Blob(5);
  s.mutable_layer_grad_norms()->Resize(static_cast<int>(blob.size() / sizeof(float)), 0.f);
  if (s.layer_grad_norms_size() > 0) {  // an empty field has no data pointer to copy into
    std::memcpy(s.mutable_layer_grad_norms()->mutable_data(), blob.data(),
                s.layer_grad_norms_size() * sizeof(float));
  }
  SetIf(q.Double(6), [&](double v) { s.set_jaccard_soft(v); });
  SetIf(q.Double(7), [&](double v) { s.set_jaccard_hard(v); });
  SetIf(q.Double(8), [&](double v) { s.set_accuracy(v); });
  s.mutable_clipping()->set_kind(static_cast<v1::Clipping::Kind>(q.Int(9)));
  s.mutable_clipping()->set_threshold(q.Double(10));
  s.set_step_seconds(q.Double(11));
  s.set_unix_millis(q.Int(12));
  s.set_update_skipped(q.Int(13) != 0);
  s.set_rolled_back_to(q.Int(14));
  s.MergeFromString(q.Blob(15));  // scalars and system metrics (empty: none)
  return s;
}

}  // namespace

template <typename T>
T Store::ReadFailed(const char* what, const Stmt& q, T empty) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++read_errors_;
  }
  std::fprintf(stderr, "store: %s: %s failed: %s\n", options_.path.c_str(), what, q.error().c_str());
  return empty;
}

std::vector<v1::Run> Store::ListRuns() const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(), "SELECT run FROM runs ORDER BY run_id");
  std::vector<v1::Run> out;
  while (q.Next()) out.push_back(Parse<v1::Run>(q.Blob(0)));
  return q.error().empty() ? out : ReadFailed("listing runs", q, std::vector<v1::Run>{});
}

std::optional<v1::Run> Store::GetRun(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(), "SELECT run FROM runs WHERE run_id = ?");
  q.Bind(1, run_id);
  if (q.Next()) return Parse<v1::Run>(q.Blob(0));
  return q.error().empty() ? std::nullopt : ReadFailed("reading run", q, std::optional<v1::Run>{});
}

std::vector<v1::StepReport> Store::ListSteps(const std::string& run_id, uint64_t after_step,
                                             uint32_t limit) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(),
         "SELECT step, epoch, loss, learning_rate, grad_norm, layer_grad_norms, jaccard_soft,"
         " jaccard_hard, accuracy, clip_kind, clip_threshold, step_seconds, unix_millis,"
         " update_skipped, rolled_back_to, extra FROM steps WHERE run_id = ? AND step > ?"
         " ORDER BY step LIMIT ?");
  q.Bind(1, run_id).Bind(2, after_step).Bind(3, int64_t{limit});
  std::vector<v1::StepReport> out;
  while (q.Next()) out.push_back(StepOf(q));
  return q.error().empty() ? out : ReadFailed("listing steps", q, std::vector<v1::StepReport>{});
}

std::vector<v1::EvalReport> Store::ListEvals(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(),
         "SELECT step, loss, jaccard_soft, jaccard_hard, accuracy FROM evals WHERE run_id = ?"
         " ORDER BY step");
  q.Bind(1, run_id);
  std::vector<v1::EvalReport> out;
  while (q.Next()) {
    v1::EvalReport e;
    e.set_step(q.Int(0));
    e.set_loss(q.Double(1));
    SetIf(q.Double(2), [&](double v) { e.set_jaccard_soft(v); });
    SetIf(q.Double(3), [&](double v) { e.set_jaccard_hard(v); });
    SetIf(q.Double(4), [&](double v) { e.set_accuracy(v); });
    out.push_back(e);
  }
  return q.error().empty() ? out : ReadFailed("listing evals", q, std::vector<v1::EvalReport>{});
}

std::vector<v1::Event> Store::ListEvents(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(), "SELECT event FROM events WHERE run_id = ? ORDER BY step, id");
  q.Bind(1, run_id);
  std::vector<v1::Event> out;
  while (q.Next()) out.push_back(Parse<v1::Event>(q.Blob(0)));
  return q.error().empty() ? out : ReadFailed("listing events", q, std::vector<v1::Event>{});
}

std::vector<v1::CommandRecord> Store::ListCommands(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(),
         "SELECT record FROM commands WHERE run_id = ? ORDER BY issued_unix_millis, command_id");
  q.Bind(1, run_id);
  std::vector<v1::CommandRecord> out;
  while (q.Next()) out.push_back(Parse<v1::CommandRecord>(q.Blob(0)));
  return q.error().empty() ? out : ReadFailed("listing commands", q, std::vector<v1::CommandRecord>{});
}

std::pair<uint64_t, uint64_t> Store::StepCount(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(), "SELECT COUNT(*), COALESCE(MAX(step), 0) FROM steps WHERE run_id = ?");
  q.Bind(1, run_id);
  if (!q.Next()) return ReadFailed("counting steps", q, std::pair<uint64_t, uint64_t>{0, 0});
  return {static_cast<uint64_t>(q.Int(0)), static_cast<uint64_t>(q.Int(1))};
}

std::vector<v1::StepReport> Store::ListRankSteps(const std::string& run_id, uint32_t rank, uint64_t after_step,
                                                 uint32_t limit) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(),
         "SELECT report FROM rank_steps WHERE run_id = ? AND rank = ? AND step > ? ORDER BY step LIMIT ?");
  q.Bind(1, run_id).Bind(2, int64_t{rank}).Bind(3, after_step).Bind(4, int64_t{limit});
  std::vector<v1::StepReport> out;
  while (q.Next()) out.push_back(Parse<v1::StepReport>(q.Blob(0)));
  return q.error().empty() ? out : ReadFailed("listing rank steps", q, std::vector<v1::StepReport>{});
}

std::map<uint32_t, uint64_t> Store::RankHighs(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(read_mu_);
  Stmt q(read_db_.get(), "SELECT rank, MAX(step) FROM rank_steps WHERE run_id = ? GROUP BY rank");
  q.Bind(1, run_id);
  std::map<uint32_t, uint64_t> out;
  while (q.Next()) out[static_cast<uint32_t>(q.Int(0))] = static_cast<uint64_t>(q.Int(1));
  return q.error().empty() ? out : ReadFailed("reading rank steps", q, std::map<uint32_t, uint64_t>{});
}

}  // namespace gradwatch::store
