// What the monitor's HTTP port answers, without the transport: routing, token checks,
// same-origin and content-type checks for state changes, /metrics, the Alertmanager
// webhook, the JSON API over runs and steps, and the live pages. http.cc feeds it requests
// read by civetweb; the unit tests and the fuzzers call it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace prometheus {
class Collectable;
}

namespace gradwatch::store {
class Store;
}

namespace gradwatch::monitor {

class Auth;
class Hub;

// The most runs /compare overlays.
constexpr size_t kMaxCompareRuns = 8;

// Bodies above this are refused with 413 before they are read.
constexpr size_t kMaxHttpBodyBytes = 1 << 20;

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // URL-decoded, without the query: "/api/v1/runs/run-1/steps"
  std::string query;   // raw, without '?': "after=10&token=abc"
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;
  bool tls = false;  // arrived over https (for the same-origin check)

  // The first header named `name` (case-insensitive), or nullptr.
  const std::string* Header(const std::string& name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// What the handlers read and act on. Not owned; each must outlive the calls.
struct HttpContext {
  std::shared_ptr<prometheus::Collectable> metrics;  // served at /metrics (the exporter's registry)
  Hub* hub = nullptr;
  const store::Store* store = nullptr;
  // With tokens enabled, /metrics and /api/ need a bearer token (header, or ?token= for
  // the live pages' own requests): the viewer role to read, the operator role to post.
  // The pages and Chart.js hold no data and stay open. nullptr = no checks.
  const Auth* auth = nullptr;
  std::string chartjs;  // file served at /static/chart.min.js
};

// Answers one request. Never throws: bad input gets a 4xx with a one-line JSON
// {"error": "..."} saying what was wrong and where; an unexpected exception inside a
// handler becomes a 500 and one line on stderr. Thread-safe as far as Hub and Store are.
HttpResponse HandleHttp(const HttpRequest& request, const HttpContext& context);

// {"error": message} with `status`; invalid UTF-8 in the message is replaced, not thrown on.
HttpResponse JsonError(int status, const std::string& message);

// The refusal for a request body of `content_length` bytes (-1 = not declared), or
// nullopt when it may be read (at most kMaxHttpBodyBytes are).
std::optional<HttpResponse> RefuseBodyLength(int64_t content_length);

// The value of `name` in a query string, %-decoded ('+' is a space); nullopt when absent.
std::optional<std::string> QueryParam(const std::string& query, const std::string& name);

// The standard reason phrase of an HTTP status ("Not Found"); "Error" for unknown ones.
const char* ReasonPhrase(int status);

}  // namespace gradwatch::monitor
