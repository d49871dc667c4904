// The monitor's HTTP face on one port: /metrics for Prometheus, the Alertmanager webhook,
// a JSON API over runs and steps, and the embedded live pages (a runs list and a page per
// run, charted with Chart.js from Debian's libjs-chart.js).
#pragma once

#include <memory>
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
  std::string listen;  // host:port; port 0 picks a free one
  // With tokens enabled, /metrics and /api/ need a bearer token (header, or ?token= for
  // the live pages' own requests): the viewer role to read, the operator role to post
  // alerts. The pages and Chart.js hold no data and stay open. nullptr = no checks.
  const Auth* auth = nullptr;
  std::string chartjs = "/usr/share/javascript/chart.js/chart.min.js";  // served at /static/chart.min.js
};

class HttpServer {
 public:
  // Throws std::runtime_error naming the address when it cannot listen.
  HttpServer(const HttpOptions& options, std::shared_ptr<prometheus::Registry> registry, Hub& hub,
             const store::Store& store);
  ~HttpServer();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gradwatch::monitor
