// The monitor's HTTP face on one port: /metrics for Prometheus, the Alertmanager webhook,
// a JSON API over runs and steps, and the embedded live pages (a runs list and a page per
// run, charted with Chart.js from Debian's libjs-chart.js). civetweb is only the transport
// here: what each request gets is decided by HandleHttp (http_handlers.h).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace prometheus {
class Registry;
}

namespace gradwatch::store {
class Store;
}

namespace gradwatch::monitor {

class Auth;
class Hub;

struct HttpOptions {
  // One host:port, the host an IPv4 literal, "localhost" or [IPv6] (where civetweb has
  // IPv6); port 0 picks a free one. Lists and civetweb's port suffixes are refused.
  std::string listen;
  // With tokens enabled, /metrics and /api/ need a bearer token (see HttpContext::auth).
  // nullptr = no checks.
  const Auth* auth = nullptr;
  std::string chartjs = "/usr/share/javascript/chart.js/chart.min.js";  // served at /static/chart.min.js
  int threads = 64;                     // requests served at once; more wait in the queue
  int max_requests_per_client = 16;     // in progress per client address; more get 429; 0 = no bound
  int request_timeout_ms = 5'000;       // to read a request's headers, and each read of its body
  // TLS (https) on this port: PEM certificate chain and private key, both or neither.
  // civetweb reads them as one file, written to <scratch_dir>/http-tls.pem (mode 0600,
  // removed on destruction); scratch_dir must then be set.
  std::string tls_cert, tls_key, scratch_dir;
};

class HttpServer {
 public:
  // Listens and serves until destroyed. Throws std::runtime_error saying what is wrong and
  // where: a listen string that is not one host:port, an address in use or not of this
  // host, unreadable TLS files or a civetweb without TLS. A missing Chart.js file only
  // prints a warning to stderr: the pages then draw no charts.
  HttpServer(const HttpOptions& options, std::shared_ptr<prometheus::Registry> registry, Hub& hub,
             const store::Store& store);
  ~HttpServer();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Requests in progress per client address, bounded (a limit of 0 or less: unbounded). Thread-safe.
class ClientLimiter {
 public:
  explicit ClientLimiter(int limit) : limit_(limit) {}
  bool Acquire(const std::string& address);  // false when `address` is at the limit
  void Release(const std::string& address);  // once per successful Acquire
  int InProgress(const std::string& address) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, int> counts_;
  const int limit_;
};

}  // namespace gradwatch::monitor
