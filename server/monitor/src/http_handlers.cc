#include "http_handlers.h"

#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>

#include <arpa/inet.h>

#include <charconv>
#include <cmath>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "alertmanager.h"
#include "auth.h"
#include "convert.h"
#include "gradwatch/common/file.h"
#include "gradwatch/common/run_id.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "http_reply.h"
#include "web_assets.h"

namespace gradwatch::monitor {
namespace {

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool IEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string Trim(const std::string& s) {
  size_t begin = s.find_first_not_of(" \t"), end = s.find_last_not_of(" \t");
  return begin == std::string::npos ? "" : s.substr(begin, end - begin + 1);
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string PercentEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    bool plain = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (plain || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += {'%', hex[c >> 4], hex[c & 15]};
    }
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = Lower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    int hi = s[i] == '%' && i + 2 < s.size() ? HexDigit(s[i + 1]) : -1;
    int lo = hi >= 0 ? HexDigit(s[i + 2]) : -1;
    if (lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

// Tokens on /metrics and /api/ (see HttpContext::auth): nullopt when the caller may go on.
std::optional<HttpResponse> CheckToken(const HttpRequest& req, const HttpContext& ctx) {
  if (!ctx.auth || !ctx.auth->enabled()) return std::nullopt;
  Role need = req.method == "POST" ? Role::kOperator : Role::kViewer;
  std::string token;
  const std::string* header = req.Header("Authorization");
  if (header && header->rfind("Bearer ", 0) == 0) {
    token = header->substr(7);
  } else if (auto param = QueryParam(req.query, "token")) {
    token = *param;
  }
  grpc::Status status = ctx.auth->CheckToken(token, need);
  if (status.ok()) return std::nullopt;
  bool unknown = status.error_code() == grpc::StatusCode::UNAUTHENTICATED;
  HttpResponse refused = JsonError(unknown ? 401 : 403, status.error_message());
  if (unknown) refused.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"gradwatch\"");
  return refused;
}

// Whether a Host header names this machine by address ("127.0.0.1:9464", "[::1]:80",
// "localhost"), not by a DNS name that a rebinding attack could point here.
bool HostIsAddress(const std::string& host) {
  std::string name = host;
  if (!name.empty() && name.front() == '[') {
    name = name.substr(1, name.find(']') == std::string::npos ? 0 : name.find(']') - 1);
    unsigned char v6[16];
    return inet_pton(AF_INET6, name.c_str(), v6) == 1;
  }
  name = name.substr(0, name.find(':'));
  unsigned char v4[4];
  return IEquals(name, "localhost") || inet_pton(AF_INET, name.c_str(), v4) == 1;
}

// State changes only from non-browser clients and this server's own pages: a JSON content
// type makes a cross-origin browser request preflight (which this server never approves),
// a browser's Origin must be this server, and reached by address (a page whose DNS name
// was rebound to this host is same-origin with itself, not with us).
std::optional<HttpResponse> CheckStateChange(const HttpRequest& req) {
  const std::string* type = req.Header("Content-Type");
  if (!type || !IEquals(Trim(type->substr(0, type->find(';'))), "application/json")) {
    return JsonError(415, "POST " + req.path + " needs Content-Type: application/json, got " +
                              (type ? Quote(*type) : std::string("none")));
  }
  const std::string* origin = req.Header("Origin");
  if (!origin) return std::nullopt;
  const std::string* host = req.Header("Host");
  std::string self = std::string(req.tls ? "https://" : "http://") + (host ? *host : "");
  if (host && HostIsAddress(*host) && IEquals(*origin, self)) return std::nullopt;
  return JsonError(403, "POST " + req.path + " from Origin " + Quote(*origin) +
                            " refused: only this server's own pages, reached by IP address or localhost (" +
                            Quote(self) + "), may change state");
}

// Alertmanager's webhook: each alert with a run_id label becomes an event of that run.
HttpResponse Webhook(const HttpRequest& req, const HttpContext& ctx) {
  std::vector<Alert> alerts;
  std::string error = ParseAlertmanagerPayload(req.body, &alerts);
  if (!error.empty()) return JsonError(400, error);
  int recorded = 0, ignored = 0;
  for (const Alert& a : alerts) {
    bool ok = !a.run_id.empty() && ctx.hub->RecordAlert(a.run_id, a.alertname, a.severity, a.status, a.summary);
    ok ? ++recorded : ++ignored;
  }
  return JsonReply({{"recorded", recorded}, {"ignored", ignored}});
}

HttpResponse Metrics(const HttpRequest&, const HttpContext& ctx) {
  return Reply(200, "text/plain; version=0.0.4", prometheus::TextSerializer().Serialize(ctx.metrics->Collect()));
}

HttpResponse RunsPage(const HttpRequest&, const HttpContext&) {
  return Reply(200, "text/html; charset=utf-8", kRunsPage);
}

// A page saying what was wrong with a page request (`message` is HTML), linking back to the runs.
HttpResponse HtmlError(int status, const std::string& title, const std::string& message, const HttpRequest& req) {
  auto token = QueryParam(req.query, "token");
  std::string home = token ? "/?token=" + PercentEncode(*token) : "/";
  return Reply(status, "text/html; charset=utf-8",
               "<!doctype html><meta charset=\"utf-8\"><title>gradwatch: " + title + "</title>\n<p>" + message +
                   " <a href=\"" + HtmlEscape(home) + "\">All runs</a></p>\n");
}

HttpResponse NoSuchRun(const std::string& run_id, const HttpRequest& req) {
  return HtmlError(404, "no such run",
                   "There is no run <code>" + HtmlEscape(run_id) + "</code> on this monitor.", req);
}

HttpResponse RunPage(const HttpRequest& req, const HttpContext& ctx) {
  std::string run_id = req.path.substr(std::string("/runs/").size());
  if (!run_id.empty() && run_id.find('/') == std::string::npos && ctx.hub->GetRun(run_id)) {
    return Reply(200, "text/html; charset=utf-8", kRunPage);
  }
  return NoSuchRun(run_id, req);
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    size_t end = s.find(',', begin);
    parts.push_back(s.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return parts;
    begin = end + 1;
  }
}

// /compare?runs=A,B[,...]: 1..kMaxCompareRuns distinct runs of this monitor, or a page saying
// which part of the request is wrong.
HttpResponse ComparePage(const HttpRequest& req, const HttpContext& ctx) {
  auto runs = QueryParam(req.query, "runs");
  if (!runs || runs->empty()) {
    return HtmlError(400, "bad request", "Compare needs the runs to overlay: <code>/compare?runs=RUN,RUN</code>.", req);
  }
  std::vector<std::string> ids = SplitCommas(*runs);
  if (ids.size() > kMaxCompareRuns) {
    return HtmlError(400, "bad request", "Compare overlays at most " + std::to_string(kMaxCompareRuns) +
                                             " runs; " + std::to_string(ids.size()) + " were asked for.", req);
  }
  std::set<std::string> seen;
  for (const auto& id : ids) {
    if (!ValidRunId(id)) {
      return HtmlError(400, "bad request", "<code>" + HtmlEscape(Quote(id)) + "</code> is not a run id (" +
                                               HtmlEscape(kRunIdRule) + ").", req);
    }
    if (!seen.insert(id).second) {
      return HtmlError(400, "bad request", "Run <code>" + HtmlEscape(id) + "</code> is named twice.", req);
    }
  }
  for (const auto& id : ids) {
    if (!ctx.hub->GetRun(id)) return NoSuchRun(id, req);
  }
  return Reply(200, "text/html; charset=utf-8", kComparePage);
}

// The pages' scripts, style and plugins, compiled in from web/.
HttpResponse StaticAssetReply(const HttpRequest& req, const HttpContext&) {
  for (size_t i = 0; i < kStaticAssetCount; ++i) {
    if (req.path != kStaticAssets[i].path) continue;
    bool css = req.path.size() > 4 && req.path.compare(req.path.size() - 4, 4, ".css") == 0;
    return Reply(200, css ? "text/css" : "application/javascript", kStaticAssets[i].body);
  }
  return JsonError(404, "no static file " + Quote(req.path));
}

HttpResponse ChartJs(const HttpRequest&, const HttpContext& ctx) {
  std::string script;
  if (!ReadWholeFile(ctx.chartjs, &script)) {
    return JsonError(404, ctx.chartjs + " not found: install libjs-chart.js (scripts/install-deps) or pass --chartjs");
  }
  return Reply(200, "application/javascript", std::move(script));
}

struct Route {
  const char* method;
  HttpResponse (*handler)(const HttpRequest&, const HttpContext&);
};

std::optional<Route> FindRoute(const std::string& path) {
  if (path == "/metrics") return Route{"GET", Metrics};
  if (path == "/api/v1/alerts/webhook") return Route{"POST", Webhook};
  if (path == "/api/v1/runs" || path.rfind("/api/v1/runs/", 0) == 0) return Route{"GET", RunsApi};
  if (path == "/static/chart.min.js") return Route{"GET", ChartJs};
  if (path.rfind("/static/", 0) == 0) return Route{"GET", StaticAssetReply};
  if (path == "/compare") return Route{"GET", ComparePage};
  if (path.rfind("/runs/", 0) == 0) return Route{"GET", RunPage};
  if (path == "/") return Route{"GET", RunsPage};
  return std::nullopt;
}

HttpResponse Dispatch(const HttpRequest& req, const HttpContext& ctx) {
  if (req.path == "/metrics" || req.path.rfind("/api/", 0) == 0) {
    if (auto refused = CheckToken(req, ctx)) return *refused;
  }
  auto route = FindRoute(req.path);
  if (!route) {
    return JsonError(404, "unknown path " + Quote(req.path) + "; try /, /metrics or /api/v1/runs");
  }
  if (req.method != route->method) {
    HttpResponse refused = JsonError(405, Quote(req.method) + " is not allowed on " + req.path + "; use " + route->method);
    refused.headers.emplace_back("Allow", route->method);
    return refused;
  }
  if (req.method == "POST") {
    if (auto refused = CheckStateChange(req)) return *refused;
  }
  if (auto refused = RefuseBodyLength(static_cast<int64_t>(req.body.size()))) return *refused;
  return route->handler(req, ctx);
}

HttpResponse InternalError(const HttpRequest& req, const char* what) {
  std::cerr << "gradwatchd: HTTP " << Quote(req.method) << " " << Quote(req.path) << " failed: " << what << std::endl;
  return JsonError(500, "internal error answering " + req.path + "; the monitor's log says more");
}

}  // namespace

const std::string* HttpRequest::Header(const std::string& name) const {
  for (const auto& [key, value] : headers) {
    if (IEquals(key, name)) return &value;
  }
  return nullptr;
}

HttpResponse HandleHttp(const HttpRequest& request, const HttpContext& context) {
  try {
    return Dispatch(request, context);
  } catch (const std::exception& e) {
    return InternalError(request, e.what());
  } catch (...) {
    return InternalError(request, "an exception that is not a std::exception");
  }
}

HttpResponse JsonError(int status, const std::string& message) {
  return Reply(status, "application/json", Dump({{"error", message}}));
}

std::optional<HttpResponse> RefuseBodyLength(int64_t content_length) {
  if (content_length <= static_cast<int64_t>(kMaxHttpBodyBytes)) return std::nullopt;
  return JsonError(413, "request body of " + std::to_string(content_length) + " bytes refused: at most " +
                            std::to_string(kMaxHttpBodyBytes) + " (1 MiB) are accepted");
}

std::optional<std::string> QueryParam(const std::string& query, const std::string& name) {
  for (size_t begin = 0; begin <= query.size();) {
    size_t end = query.find('&', begin);
    if (end == std::string::npos) end = query.size();
    std::string part = query.substr(begin, end - begin);
    size_t eq = part.find('=');
    if (PercentDecode(part.substr(0, eq)) == name) {
      return eq == std::string::npos ? "" : PercentDecode(part.substr(eq + 1));
    }
    begin = end + 1;
  }
  return std::nullopt;
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    default: return "Error";
  }
}

}  // namespace gradwatch::monitor
