// Access control for gradwatchd's gRPC calls: bearer tokens with roles, read from a file
// named on the command line.
//
//   {"tokens": [{"token": "op-...",  "role": "operator"},
//               {"token": "view-...", "role": "viewer"},
//               {"token": "rep-...", "role": "reporter", "run_id": "run-7"}]}
//
// operator: every call (commands, launch) and every read; viewer: reads only; reporter:
// Telemetry.Stream for its own run_id only. Without a tokens file every call is allowed,
// and RunServer then listens on loopback only.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <optional>
#include <string>

namespace gradwatch::monitor {

enum class Role { kViewer, kReporter, kOperator };

struct Grant {
  Role role = Role::kViewer;
  std::string run_id;  // reporter tokens only
};

// A tokens file's text, checked: every token by its value, or the first problem ("" when
// none), naming the entry: 'tokens[2].role: "admin" is not operator, viewer or reporter'.
// Tokens are 16..1024 printable ASCII characters without spaces, each listed once; a
// reporter's run_id is required; the list may not be empty (an empty one would turn
// authentication off). Pure: no I/O, never throws (but std::bad_alloc), whatever `text` is.
struct ParsedTokens {
  std::map<std::string, Grant> grants;
  std::string error;
};
ParsedTokens ParseTokens(const std::string& text);

class Auth {
 public:
  Auth() = default;  // disabled: every call allowed
  // Reads and parses the tokens file (ParseTokens), at start-up. Throws std::runtime_error
  // "tokens file PATH: ..." naming the entry that is wrong or why the file cannot be read.
  static Auth Load(const std::string& path);

  bool enabled() const { return !tokens_.empty(); }
  // Tokens the monitor gave its own launched jobs: the run a token reports for, or
  // nullopt. Consulted for tokens not in the file; set before any call is served.
  using JobTokens = std::function<std::optional<std::string>(const std::string& token)>;
  void set_job_tokens(JobTokens lookup) { job_tokens_ = std::move(lookup); }
  // OK, UNAUTHENTICATED (no or unknown token) or PERMISSION_DENIED (wrong role, or a
  // reporter token for another run), with a message saying which role was missing.
  grpc::Status Check(const grpc::ServerContextBase& ctx, Role need, const std::string& run_id = "") const;
  // The same decision for an HTTP request: `token` is the bearer token ("" = none).
  grpc::Status CheckToken(const std::string& token, Role need, const std::string& run_id = "") const;

 private:
  std::map<std::string, Grant> tokens_;
  JobTokens job_tokens_;
};

const char* RoleName(Role role);

}  // namespace gradwatch::monitor
