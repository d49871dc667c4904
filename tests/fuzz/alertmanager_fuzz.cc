// libFuzzer target: the Alertmanager webhook payload alone. Any bytes are parsed as the
// body of POST /api/v1/alerts/webhook (what ParseAlertmanagerPayload accepts is then posted
// through HandleHttp to a hub holding run "run-1"). A payload is recorded or refused with
// a 400 that names what is wrong; it never throws, crashes or answers 500.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "alertmanager.h"
#include <prometheus/registry.h>

#include "gradwatch/metrics/exporter.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "http_handlers.h"

namespace {

using namespace gradwatch;

class NullSink : public monitor::StreamSink {
 public:
  void Send(const v1::MonitorMessage&) override {}
};

struct World {
  World() {
    auto dir = std::filesystem::temp_directory_path() / ("gradwatch-am-fuzz-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    store = std::make_unique<store::Store>(store::StoreOptions{(dir / "gradwatch.db").string()});
    hub = std::make_unique<monitor::Hub>(monitor::HubOptions{}, *store, exporter, clock);
    v1::Hello hello;
    hello.set_run_id("run-1");
    hello.add_layer_names("head.weight");
    if (!hub->OnHello(hello, std::make_shared<NullSink>()).ok()) std::abort();
    context.metrics = exporter.registry();
    context.hub = hub.get();
    context.store = store.get();
  }
  monitor::FakeClock clock;
  metrics::Exporter exporter;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<monitor::Hub> hub;
  monitor::HttpContext context;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  std::string body(reinterpret_cast<const char*>(data), size);
  std::vector<monitor::Alert> alerts;
  std::string error = monitor::ParseAlertmanagerPayload(body, &alerts);
  if (!error.empty() && error.find('\n') != std::string::npos) std::abort();  // one line
  monitor::HttpRequest post;
  post.method = "POST";
  post.path = "/api/v1/alerts/webhook";
  post.headers = {{"Host", "127.0.0.1:9464"}, {"Content-Type", "application/json"}};
  post.body = std::move(body);
  int status = monitor::HandleHttp(post, world->context).status;
  if (status != (error.empty() ? 200 : 400)) std::abort();
  return 0;
}
