#include "http.h"

#include <CivetServer.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "auth.h"
#include "gradwatch/common/file.h"
#include "convert.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "web_assets.h"

namespace gradwatch::monitor {
namespace {

using nlohmann::json;

void Reply(mg_connection* conn, int status, const std::string& type, const std::string& body,
           const std::string& extra_headers = "") {
  const char* reason = status == 200 ? "OK" : status == 400 ? "Bad Request" : status == 401 ? "Unauthorized"
                       : status == 403 ? "Forbidden" : status == 404 ? "Not Found" : "Error";
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
            "%sConnection: close\r\n\r\n",
            status, reason, type.c_str(), body.size(), extra_headers.c_str());
  mg_write(conn, body.data(), body.size());
}

void Error(mg_connection* conn, int status, const std::string& message) {
  Reply(conn, status, "application/json", json{{"error", message}}.dump());
}

// JSON has no NaN or infinity: they become null.
json Num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// See HttpOptions::auth.
class TokenGate : public CivetAuthHandler {
 public:
  explicit TokenGate(const Auth& auth) : auth_(auth) {}
  bool authorize(CivetServer*, mg_connection* conn) override {
    const mg_request_info* request = mg_get_request_info(conn);
    Role need = std::string(request->request_method) == "POST" ? Role::kOperator : Role::kViewer;
    std::string token;
    const char* header = mg_get_header(conn, "Authorization");
    if (header && std::string(header).rfind("Bearer ", 0) == 0) {
      token = header + 7;
    } else if (request->query_string) {
      char value[512];
      if (mg_get_var(request->query_string, std::strlen(request->query_string), "token", value, sizeof value) > 0) {
        token = value;
      }
    }
    grpc::Status status = auth_.CheckToken(token, need);
    if (status.ok()) return true;
    bool unknown = status.error_code() == grpc::StatusCode::UNAUTHENTICATED;
    Reply(conn, unknown ? 401 : 403, "application/json", json{{"error", status.error_message()}}.dump(),
          unknown ? "WWW-Authenticate: Bearer realm=\"gradwatch\"\r\n" : "");
    return false;
  }

 private:
  const Auth& auth_;
};

class Metrics : public CivetHandler {
 public:
  explicit Metrics(std::shared_ptr<prometheus::Registry> r) : registry_(std::move(r)) {}
  bool handleGet(CivetServer*, mg_connection* conn) override {
    Reply(conn, 200, "text/plain; version=0.0.4", prometheus::TextSerializer().Serialize(registry_->Collect()));
    return true;
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
};

// Alertmanager's webhook (version 4 payload): each alert with a run_id label becomes an
// event of that run.
class Webhook : public CivetHandler {
 public:
  explicit Webhook(Hub& hub) : hub_(hub) {}
  bool handlePost(CivetServer*, mg_connection* conn) override {
    json body = json::parse(CivetServer::getPostData(conn), nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("alerts") || !body["alerts"].is_array()) {
      Error(conn, 400, "expected an Alertmanager webhook payload: a JSON object with an \"alerts\" array");
      return true;
    }
    int recorded = 0, ignored = 0;
    for (const auto& a : body["alerts"]) {
      json labels = a.value("labels", json::object()), notes = a.value("annotations", json::object());
      std::string run = labels.value("run_id", "");
      std::string text = notes.value("summary", notes.value("description", ""));
      bool ok = !run.empty() && hub_.RecordAlert(run, labels.value("alertname", "alert"),
                                                labels.value("severity", "warning"), a.value("status", "firing"), text);
      ok ? ++recorded : ++ignored;
    }
    Reply(conn, 200, "application/json", json{{"recorded", recorded}, {"ignored", ignored}}.dump());
    return true;
  }

 private:
  Hub& hub_;
};

class RunsApi : public CivetHandler {
 public:
  RunsApi(Hub& hub, const store::Store& store) : hub_(hub), store_(store) {}

  bool handleGet(CivetServer*, mg_connection* conn) override {
    std::string uri = mg_get_request_info(conn)->local_uri;
    const std::string prefix = "/api/v1/runs";
    std::string rest = uri.size() > prefix.size() ? uri.substr(prefix.size() + 1) : "";
    if (rest.empty()) return List(conn);
    auto slash = rest.find('/');
    std::string run_id = rest.substr(0, slash);
    if (slash == std::string::npos || rest.substr(slash) != "/steps") {
      Error(conn, 404, "unknown path " + uri + "; try /api/v1/runs or /api/v1/runs/RUN/steps?after=N");
      return true;
    }
    return Steps(conn, run_id);
  }

 private:
  bool List(mg_connection* conn) {
    json runs = json::array();
    for (const auto& r : hub_.ListRuns()) {
      runs.push_back({{"run_id", r.run_id()}, {"state", StateName(r.state())}, {"mode", ModeName(r.mode())},
                      {"steps", r.steps()}, {"last_step", r.last_step()}, {"total_steps", r.config().total_steps()},
                      {"loss", Num(r.last_loss())}, {"grad_norm", Num(r.last_grad_norm())}, {"events", r.events()}});
    }
    Reply(conn, 200, "application/json", json{{"runs", runs}}.dump());
    return true;
  }

  bool Steps(mg_connection* conn, const std::string& run_id) {
    auto run = hub_.GetRun(run_id);
    if (!run) {
      Error(conn, 404, "no run " + run_id);
      return true;
    }
    std::string after_text;
    const char* query = mg_get_request_info(conn)->query_string;
    uint64_t after = 0;
    if (query && CivetServer::getParam(query, strlen(query), "after", after_text)) after = std::stoull(after_text);
    json steps = json::array(), evals = json::array(), events = json::array(), commands = json::array();
    for (const auto& s : store_.ListSteps(run_id, after, 5000)) {
      steps.push_back({s.step(), Num(s.loss()), Num(s.grad_norm()), Num(s.learning_rate()),
                       s.has_jaccard_soft() ? Num(s.jaccard_soft()) : json(nullptr),
                       s.has_jaccard_hard() ? Num(s.jaccard_hard()) : json(nullptr),
                       s.clipping().kind() == v1::Clipping::KIND_OFF ? json(nullptr) : Num(s.clipping().threshold())});
    }
    for (const auto& e : store_.ListEvals(run_id)) {
      if (e.step() <= after) continue;
      evals.push_back({e.step(), Num(e.loss()), e.has_jaccard_soft() ? Num(e.jaccard_soft()) : json(nullptr),
                       e.has_jaccard_hard() ? Num(e.jaccard_hard()) : json(nullptr)});
    }
    for (const auto& e : store_.ListEvents(run_id)) {
      events.push_back({{"step", e.step()}, {"kind", e.kind()},
                        {"severity", e.severity() == v1::SEVERITY_CRITICAL ? "critical" : "warning"},
                        {"message", e.message()}, {"first_layer", e.first_layer()}});
    }
    for (const auto& c : store_.ListCommands(run_id)) {
      commands.push_back({{"id", c.command().id()}, {"action", ActionName(c.command())},
                          {"issued_by", c.command().issued_by()}, {"reason", c.command().reason()},
                          {"issued_at_step", c.issued_at_step()},
                          {"applied_at_step", c.has_ack() ? json(c.ack().applied_at_step()) : json(nullptr)}});
    }
    json out = {{"run", {{"run_id", run->run_id()}, {"state", StateName(run->state())}, {"mode", ModeName(run->mode())},
                         {"steps", run->steps()}, {"last_step", run->last_step()},
                         {"total_steps", run->config().total_steps()}}},
                {"steps", steps}, {"evals", evals}, {"events", events}, {"commands", commands}};
    Reply(conn, 200, "application/json", out.dump());
    return true;
  }

  Hub& hub_;
  const store::Store& store_;
};

class Page : public CivetHandler {
 public:
  explicit Page(const char* html) : html_(html) {}
  bool handleGet(CivetServer*, mg_connection* conn) override {
    Reply(conn, 200, "text/html; charset=utf-8", html_);
    return true;
  }

 private:
  const char* html_;
};

class ChartJs : public CivetHandler {
 public:
  explicit ChartJs(std::string path) : path_(std::move(path)) {}
  bool handleGet(CivetServer*, mg_connection* conn) override {
    std::string script;
    if (!ReadWholeFile(path_, &script)) {
      Error(conn, 404, path_ + " not found: install libjs-chart.js (scripts/install-deps) or pass --chartjs");
      return true;
    }
    Reply(conn, 200, "application/javascript", script);
    return true;
  }

 private:
  std::string path_;
};

}  // namespace

struct HttpServer::Impl {
  std::unique_ptr<CivetServer> server;
  Metrics metrics;
  Webhook webhook;
  RunsApi api;
  Page runs_page{kRunsPage}, run_page{kRunPage};
  ChartJs chartjs;
  std::unique_ptr<TokenGate> gate;

  Impl(const HttpOptions& o, std::shared_ptr<prometheus::Registry> registry, Hub& hub, const store::Store& store)
      : metrics(std::move(registry)), webhook(hub), api(hub, store), chartjs(o.chartjs) {
    std::vector<std::string> options = {"listening_ports", o.listen, "num_threads", "4"};
    try {
      server = std::make_unique<CivetServer>(options);
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot serve HTTP (/metrics) on " + o.listen + ": " + e.what());
    }
    if (o.auth && o.auth->enabled()) {
      gate = std::make_unique<TokenGate>(*o.auth);
      server->addAuthHandler("/metrics", *gate);
      server->addAuthHandler("/api", *gate);
    }
    server->addHandler("/metrics", metrics);
    server->addHandler("/api/v1/alerts/webhook", webhook);
    server->addHandler("/api/v1/runs", api);
    server->addHandler("/static/chart.min.js", chartjs);
    server->addHandler("/runs/", run_page);
    server->addHandler("/$", runs_page);
  }
};

HttpServer::HttpServer(const HttpOptions& options, std::shared_ptr<prometheus::Registry> registry, Hub& hub,
                       const store::Store& store)
    : impl_(std::make_unique<Impl>(options, std::move(registry), hub, store)) {}

HttpServer::~HttpServer() = default;

int HttpServer::port() const {
  auto ports = impl_->server->getListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace gradwatch::monitor
