// libFuzzer target: the monitor's HTTP handling without civetweb. The input is split into a
// request the way it would arrive on the wire, one part per line:
//
//   METHOD\nPATH\nQUERY\nHeader: value\n...\n\nBODY
//
// and answered by HandleHttp against a hub holding run "run-1" (steps, an eval), across
// /api/v1/*, the pages, /metrics and the webhook. Any input must get an answer: a 500 means
// a handler threw, which is a bug here, so it aborts.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>

#include <prometheus/registry.h>

#include "monitor_world.h"
#include "http_handlers.h"

namespace {

using namespace gradwatch;

struct World : fuzz::MonitorWorld {
  World() : MonitorWorld("http-fuzz") {
    OpenRun("run-1");
    for (uint64_t i = 1; i <= 20; ++i) {
      v1::StepReport s;
      s.set_step(i);
      s.set_loss(i == 7 ? std::numeric_limits<double>::infinity() : 0.5);
      s.set_grad_norm(0.2 * i);
      s.add_layer_grad_norms(0.1f);
      hub->OnStep("run-1", s, *sink);
    }
    v1::EvalReport eval;
    eval.set_step(10);
    eval.set_loss(0.4);
    hub->OnEval("run-1", eval, *sink);
    store->Flush();
    context.metrics = exporter.registry();
    context.hub = hub.get();
    context.store = store.get();
    context.chartjs = "/usr/share/javascript/chart.js/chart.min.js";
  }
  monitor::HttpContext context;
};

// The next line of `in` from `*at` (without its '\n'); `*at` moves past it.
std::string Line(const std::string& in, size_t* at) {
  size_t end = in.find('\n', *at);
  if (end == std::string::npos) end = in.size();
  std::string line = in.substr(*at, end - *at);
  *at = end < in.size() ? end + 1 : in.size();
  return line;
}

monitor::HttpRequest Split(const std::string& in) {
  monitor::HttpRequest r;
  size_t at = 0;
  r.method = Line(in, &at);
  r.path = Line(in, &at);
  r.query = Line(in, &at);
  for (std::string header; at < in.size() && !(header = Line(in, &at)).empty();) {
    size_t colon = header.find(':');
    std::string value = colon == std::string::npos ? "" : header.substr(colon + 1);
    r.headers.emplace_back(header.substr(0, colon), value.empty() || value[0] != ' ' ? value : value.substr(1));
  }
  r.body = in.substr(at);
  r.tls = !r.body.empty() && r.body.size() % 7 == 0;
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();  // one monitor for the whole run, as in production
  monitor::HttpRequest request = Split(std::string(reinterpret_cast<const char*>(data), size));
  monitor::HttpResponse response = monitor::HandleHttp(request, world->context);
  if (response.status == 500 || response.status < 200 || response.status > 599) std::abort();
  world->clock.Advance(10);
  world->hub->Tick();
  return 0;
}
