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

#include "monitor_world.h"
#include "http_handlers.h"

namespace {

using namespace gradwatch;

struct World : fuzz::MonitorWorld {
  World() : MonitorWorld("am-fuzz") {
    OpenRun("run-1");
    context.metrics = exporter.registry();
    context.hub = hub.get();
    context.store = store.get();
  }
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
