// A thin, non-throwing wrapper over SQLite's prepared statements for the store: a failed
// prepare or step is a value (an error message naming the operation), never an exception,
// because the store's writer thread and its readers must survive "database is locked" and
// "database or disk is full".
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>

namespace gradwatch::store {

// "<what>: <SQLite's message for db>", the form every store error takes.
std::string ErrorOf(sqlite3* db, const std::string& what);

// Runs SQL without results. Returns "" on success, else ErrorOf(db, what).
std::string Exec(sqlite3* db, const char* sql, const std::string& what);

// A prepared statement that finalizes itself. A failed prepare leaves it inert: binds do
// nothing and Next()/Run() report the prepare's error.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool prepared() const { return stmt_ != nullptr; }
  // "" while nothing failed, else "<SQLite's message>" of the prepare or the last step.
  const std::string& error() const { return error_; }

  Stmt& Bind(int i, const std::string& v);
  Stmt& Bind(int i, double v);
  Stmt& Bind(int i, int64_t v);
  Stmt& Bind(int i, uint64_t v) { return Bind(i, static_cast<int64_t>(v)); }
  Stmt& BindBlob(int i, const void* data, size_t n);
  // As Bind / BindBlob without SQLite's copy: the data must stay valid and unchanged until
  // Run() returns (the writer's inserts, whose data lives in the record being written).
  Stmt& BindRef(int i, const std::string& v);
  Stmt& BindBlobRef(int i, const void* data, size_t n);

  // Steps once: true while a row is ready; false at the end or on an error (error() says).
  bool Next();
  // Steps once, then resets and clears the bindings (also after an error), so that a
  // cached statement stays usable. Returns "" on success, else "<what>: <message>".
  std::string Run(const std::string& what);

  // SQLite stores a bound NaN as NULL; NULL reads back as NaN (no column here is NULL otherwise).
  double Double(int col) const;
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Blob(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string error_;
};

}  // namespace gradwatch::store
