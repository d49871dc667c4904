#include "monitor_fixture.h"

#include <unistd.h>

#include <filesystem>

#include "gradwatch/monitor/server.h"
#include "gradwatch/store/store.h"
#include "gradwatch/torch/wire.h"

namespace gradwatch::torchmon::testing {

struct TestMonitor::Impl {
  std::filesystem::path dir;
  monitor::SystemClock clock;
  std::unique_ptr<monitor::Server> server;
};

TestMonitor::TestMonitor(const std::string& name) : impl_(std::make_unique<Impl>()) {
  impl_->dir = std::filesystem::temp_directory_path() /
               ("gradwatch-fixture-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(impl_->dir);
  monitor::ServerConfig c;
  c.listen = "127.0.0.1:0";
  c.metrics_listen = "";  // no HTTP server in a torch process: these tests read the store
  c.data_dir = impl_->dir.string();
  impl_->server = std::make_unique<monitor::Server>(c, impl_->clock);
}

TestMonitor::~TestMonitor() {
  impl_->server.reset();
  std::filesystem::remove_all(impl_->dir);
}

std::string TestMonitor::address() const {
  return "127.0.0.1:" + std::to_string(impl_->server->grpc_port());
}

uint64_t TestMonitor::StepsOf(const std::string& run_id) const {
  auto run = impl_->server->hub().GetRun(run_id);
  return run ? run->steps() : 0;
}

std::future<CommandResult> TestMonitor::Send(const std::string& run_id, const Command& command,
                                             int timeout_ms) {
  auto promise = std::make_shared<std::promise<CommandResult>>();
  auto future = promise->get_future();
  Status sent = impl_->server->hub().SendCommand(
      run_id, ToWire(command), timeout_ms, [promise](const v1::CommandRecord& r, bool acked) {
        promise->set_value({acked, r.ack().applied_at_step(),
                            r.ack().result() == v1::CommandAck::RESULT_APPLIED, r.ack().detail()});
      });
  if (!sent.ok()) promise->set_value({false, 0, false, sent.message()});
  return future;
}

std::vector<StoredStep> TestMonitor::StoredSteps(const std::string& run_id) {
  impl_->server->Shutdown();
  store::Store store({(impl_->dir / "gradwatch.db").string()});
  std::vector<StoredStep> out;
  for (const auto& s : store.ListSteps(run_id, 0, 1'000'000)) {
    out.push_back({s.step(), FromWire(s.clipping()), s.learning_rate(), s.update_skipped(), s.rolled_back_to()});
  }
  return out;
}

}  // namespace gradwatch::torchmon::testing
