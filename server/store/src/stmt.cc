#include "stmt.h"

#include <cmath>

namespace gradwatch::store {

std::string ErrorOf(sqlite3* db, const std::string& what) {
  return what + ": " + (db ? sqlite3_errmsg(db) : "out of memory");
}

// The message comes from sqlite3_errmsg, not from sqlite3_exec's allocated copy: under
// TSan, sqlite3_free's lock is hidden (called_from_lib) but its tail-called unlock is not.
std::string Exec(sqlite3* db, const char* sql, const std::string& what) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK) return "";
  return ErrorOf(db, what);
}

Stmt::Stmt(sqlite3* db, const char* sql) : db_(db) {
  if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
    error_ = sqlite3_errmsg(db);
    sqlite3_finalize(stmt_);
    stmt_ = nullptr;
  }
}

Stmt::~Stmt() { sqlite3_finalize(stmt_); }

Stmt& Stmt::Bind(int i, const std::string& v) {
  if (stmt_) sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

Stmt& Stmt::Bind(int i, double v) {
  if (stmt_) sqlite3_bind_double(stmt_, i, v);
  return *this;
}

Stmt& Stmt::Bind(int i, int64_t v) {
  if (stmt_) sqlite3_bind_int64(stmt_, i, v);
  return *this;
}

Stmt& Stmt::BindBlob(int i, const void* data, size_t n) {
  if (stmt_) sqlite3_bind_blob(stmt_, i, data, static_cast<int>(n), SQLITE_TRANSIENT);
  return *this;
}

Stmt& Stmt::BindRef(int i, const std::string& v) {
  if (stmt_) sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  return *this;
}

Stmt& Stmt::BindBlobRef(int i, const void* data, size_t n) {
  if (stmt_) sqlite3_bind_blob(stmt_, i, data, static_cast<int>(n), SQLITE_STATIC);
  return *this;
}

bool Stmt::Next() {
  if (!stmt_) return false;  // error_ holds the prepare's message
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE) error_ = sqlite3_errmsg(db_);
  return false;
}

std::string Stmt::Run(const std::string& what) {
  Next();
  if (stmt_) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  if (error_.empty()) return "";
  std::string msg = what + ": " + error_;
  if (stmt_) error_.clear();  // a cached statement starts clean; a failed prepare stays failed
  return msg;
}

double Stmt::Double(int col) const {
  if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nan("");
  return sqlite3_column_double(stmt_, col);
}

std::string Stmt::Blob(int col) const {
  auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  return p ? std::string(p, sqlite3_column_bytes(stmt_, col)) : std::string();
}

}  // namespace gradwatch::store
