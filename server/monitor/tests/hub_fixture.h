// The hub's test fixture: a real store in a temp folder, a fake stream and a fake clock.
#pragma once

#include "gradwatch/monitor/hub.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "gradwatch/metrics/exporter.h"
#include <prometheus/registry.h>
#include <cmath>
#include "gradwatch/store/store.h"

namespace gradwatch::monitor {

class FakeSink : public StreamSink {
 public:
  void Send(const v1::MonitorMessage& m) override {
    std::lock_guard<std::mutex> lock(mu);
    sent.push_back(m);
  }
  template <typename Pred>
  std::vector<v1::MonitorMessage> Where(Pred pred) {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<v1::MonitorMessage> out;
    for (const auto& m : sent) if (pred(m)) out.push_back(m);
    return out;
  }
  std::mutex mu;
  std::vector<v1::MonitorMessage> sent;
};

class HubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gradwatch-hub-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    Open();
  }
  void Open() {
    hub_.reset();
    store::StoreOptions so{(dir_ / "gradwatch.db").string()};
    so.on_committed = [this](const std::map<store::StreamKey, uint64_t>& s) {
      if (hub_) hub_->OnStored(s);
    };
    store_.reset();
    store_ = std::make_unique<store::Store>(so);
    hub_ = std::make_unique<Hub>(options_, *store_, exporter_, clock_);
  }
  void TearDown() override {
    store_->Flush();
    hub_.reset();
  }

  v1::Hello Hello(const std::string& run_id, v1::Mode mode = v1::MODE_GUARD) {
    v1::Hello h;
    h.set_run_id(run_id);
    h.add_layer_names("enc0.conv1.weight");
    h.add_layer_names("head.weight");
    h.set_mode(mode);
    h.mutable_config()->set_loss_upper_bound(1.0);
    h.set_trainer_instance(42);  // one trainer process, unless a test says otherwise
    return h;
  }
  v1::StepReport Step(uint64_t step, double norm, double loss = 0.5) {
    v1::StepReport s;
    s.set_step(step);
    s.set_loss(loss);
    s.set_grad_norm(norm);
    s.add_layer_grad_norms(static_cast<float>(norm * 0.6));
    s.add_layer_grad_norms(static_cast<float>(norm * 0.8));
    s.set_jaccard_soft(0.6);
    s.set_jaccard_hard(0.6);
    return s;
  }
  // A healthy run: grad norm ~0.2 with small deterministic wiggle.
  void Healthy(const std::string& run, uint64_t from, uint64_t to, FakeSink& sink) {
    for (uint64_t i = from; i <= to; ++i) hub_->OnStep(run, Step(i, 0.2 * (1 + 0.05 * (static_cast<int>((i * 7) % 5) - 2))), sink);
  }

  std::filesystem::path dir_;
  HubOptions options_ = [] {
    HubOptions o;
    o.stall_timeout_ms = 5'000;
    o.retention_ms = 60'000;
    return o;
  }();
  FakeClock clock_;
  metrics::Exporter exporter_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Hub> hub_;
};

}  // namespace gradwatch::monitor
