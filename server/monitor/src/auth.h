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

class Auth {
 public:
  Auth() = default;  // disabled: every call allowed
  // Throws std::runtime_error naming the file and the entry that is wrong.
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
  struct Grant {
    Role role = Role::kViewer;
    std::string run_id;  // reporter tokens only
  };
  std::map<std::string, Grant> tokens_;
  JobTokens job_tokens_;
};

const char* RoleName(Role role);

}  // namespace gradwatch::monitor
