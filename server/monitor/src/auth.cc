#include "auth.h"

#include "gradwatch/common/file.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace gradwatch::monitor {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kViewer: return "viewer";
    case Role::kReporter: return "reporter";
    default: return "operator";
  }
}

Auth Auth::Load(const std::string& path) {
  nlohmann::json doc = nlohmann::json::parse(ReadFileOrThrow(path, "tokens file"), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("tokens") || !doc["tokens"].is_array()) {
    throw std::runtime_error("tokens file " + path + ": expected {\"tokens\": [{\"token\": ..., \"role\": ...}]}");
  }
  Auth auth;
  for (size_t i = 0; i < doc["tokens"].size(); ++i) {
    const auto& t = doc["tokens"][i];
    std::string where = "tokens file " + path + ": tokens[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("token") || !t["token"].is_string() || t["token"].get<std::string>().size() < 16) {
      throw std::runtime_error(where + ".token: a string of at least 16 characters is required");
    }
    std::string role = t.value("role", "");
    Grant g;
    if (role == "operator") g.role = Role::kOperator;
    else if (role == "viewer") g.role = Role::kViewer;
    else if (role == "reporter") g.role = Role::kReporter;
    else throw std::runtime_error(where + ".role: \"" + role + "\" is not operator, viewer or reporter");
    if (g.role == Role::kReporter) {
      g.run_id = t.value("run_id", "");
      if (g.run_id.empty()) throw std::runtime_error(where + ".run_id: a reporter token is scoped to one run");
    }
    auth.tokens_[t["token"].get<std::string>()] = g;
  }
  return auth;
}

grpc::Status Auth::Check(const grpc::ServerContextBase& ctx, Role need, const std::string& run_id) const {
  if (!enabled()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return CheckToken("", need, run_id);
  std::string value(it->second.data(), it->second.size());
  const std::string prefix = "Bearer ";
  // A malformed header is an unknown token, not a missing one.
  return CheckToken(value.rfind(prefix, 0) == 0 ? value.substr(prefix.size()) : "\n", need, run_id);
}

grpc::Status Auth::CheckToken(const std::string& token, Role need, const std::string& run_id) const {
  if (!enabled()) return grpc::Status::OK;
  std::string needed = std::string("this call needs the ") + RoleName(need) + " role";
  if (token.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "no token: " + needed + "; pass --token or set GRADWATCH_TOKEN");
  }
  auto grant = tokens_.find(token);
  Grant g;
  if (grant != tokens_.end()) {
    g = grant->second;
  } else if (auto run = job_tokens_ ? job_tokens_(token) : std::nullopt) {
    g = Grant{Role::kReporter, *run};
  } else {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown token: " + needed);
  }
  if (g.role == Role::kReporter && need == Role::kReporter && g.run_id != run_id) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "this reporter token is for run " + g.run_id + ", not " + run_id);
  }
  // An operator may do anything (replaying a run included); a viewer only reads; a
  // reporter only streams its own run.
  bool ok = g.role == Role::kOperator || (g.role == Role::kViewer && need == Role::kViewer) ||
            (g.role == Role::kReporter && need == Role::kReporter);
  if (!ok) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        std::string("the token's role is ") + RoleName(g.role) + "; " + needed);
  }
  return grpc::Status::OK;
}

}  // namespace gradwatch::monitor
