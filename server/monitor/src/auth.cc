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

namespace {

constexpr size_t kMinToken = 16, kMaxToken = 1024;

// What is wrong with one entry of "tokens", "" when nothing; fills `token` and `grant`.
std::string CheckEntry(const nlohmann::json& t, std::string* token, Grant* grant) {
  if (!t.is_object()) return ": expected an object {\"token\": ..., \"role\": ...}";
  auto value = t.find("token");
  if (value == t.end() || !value->is_string() || value->get_ref<const std::string&>().size() < kMinToken ||
      value->get_ref<const std::string&>().size() > kMaxToken) {
    return ".token: a string of 16 to 1024 characters is required";
  }
  *token = value->get<std::string>();
  for (char ch : *token) {
    if (ch < 0x21 || ch > 0x7e) return ".token: only printable ASCII without spaces (it travels in a header)";
  }
  auto role = t.find("role");
  std::string name = role != t.end() && role->is_string() ? role->get<std::string>() : "";
  if (name == "operator") grant->role = Role::kOperator;
  else if (name == "viewer") grant->role = Role::kViewer;
  else if (name == "reporter") grant->role = Role::kReporter;
  else return ".role: \"" + name + "\" is not operator, viewer or reporter";
  if (grant->role == Role::kReporter) {
    auto run = t.find("run_id");
    if (run == t.end() || !run->is_string() || run->get_ref<const std::string&>().empty()) {
      return ".run_id: a reporter token is scoped to one run";
    }
    grant->run_id = run->get<std::string>();
  }
  return "";
}

}  // namespace

ParsedTokens ParseTokens(const std::string& text) {
  ParsedTokens out;
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("tokens") || !doc["tokens"].is_array()) {
    out.error = "expected {\"tokens\": [{\"token\": ..., \"role\": ...}]}";
    return out;
  }
  const auto& list = doc["tokens"];
  if (list.empty()) out.error = "tokens: the list is empty; it would turn authentication off";
  for (size_t i = 0; i < list.size() && out.error.empty(); ++i) {
    std::string token;
    Grant grant;
    std::string problem = CheckEntry(list[i], &token, &grant);
    if (problem.empty() && out.grants.count(token)) problem = ".token: listed twice";
    if (!problem.empty()) {
      out.error = "tokens[" + std::to_string(i) + "]" + problem;
    } else {
      out.grants[token] = grant;
    }
  }
  if (!out.error.empty()) out.grants.clear();
  return out;
}

Auth Auth::Load(const std::string& path) {
  ParsedTokens parsed = ParseTokens(ReadFileOrThrow(path, "tokens file"));
  if (!parsed.error.empty()) throw std::runtime_error("tokens file " + path + ": " + parsed.error);
  Auth auth;
  auth.tokens_ = std::move(parsed.grants);
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
