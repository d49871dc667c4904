// What the monitor's fuzz targets share: one hub over a store in a fresh temp folder, a
// fake clock and a stream that drops what it is sent. One World lives for a whole fuzzing
// run, as one monitor does in production.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "gradwatch/metrics/exporter.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"

namespace gradwatch::fuzz {

class NullSink : public monitor::StreamSink {
 public:
  void Send(const v1::MonitorMessage&) override {}
};

struct MonitorWorld {
  explicit MonitorWorld(const std::string& name) {
    auto dir = std::filesystem::temp_directory_path() / ("gradwatch-" + name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    store = std::make_unique<store::Store>(store::StoreOptions{(dir / "gradwatch.db").string()});
    hub = std::make_unique<monitor::Hub>(monitor::HubOptions{}, *store, exporter, clock);
  }
  // Opens `run_id` with one layer; aborts if the hub refuses it (a bug in the harness).
  void OpenRun(const std::string& run_id) {
    v1::Hello hello;
    hello.set_run_id(run_id);
    hello.add_layer_names("head.weight");
    hello.set_trainer_instance(1);
    if (!hub->OnHello(hello, sink).ok()) std::abort();
  }
  monitor::FakeClock clock;
  metrics::Exporter exporter;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<monitor::Hub> hub;
  std::shared_ptr<NullSink> sink = std::make_shared<NullSink>();
};

}  // namespace gradwatch::fuzz
