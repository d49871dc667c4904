// The hub's report, command and policy paths.
#include "hub_fixture.h"

#include <atomic>
#include <chrono>
#include <future>

namespace gradwatch::monitor {
namespace {

TEST_F(HubTest, refuses_a_hello_with_an_invalid_run_id_and_says_why) {
  auto sink = std::make_shared<FakeSink>();
  std::string error = hub_->OnHello(Hello("has space"), sink).message();
  EXPECT_NE(error.find("run_id"), std::string::npos) << error;
  EXPECT_TRUE(hub_->ListRuns().empty());
}

TEST_F(HubTest, rejects_a_step_with_the_wrong_layer_count_in_band) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  v1::StepReport bad = Step(1, 0.2);
  bad.add_layer_grad_norms(1.f);
  hub_->OnStep("r", bad, *sink);
  auto rejections = sink->Where([](auto& m) { return m.has_rejection(); });
  ASSERT_EQ(rejections.size(), 1u);
  EXPECT_EQ(rejections[0].rejection().reason(), "step 1 has 3 layer norms, hello declared 2 layers");
  EXPECT_EQ(hub_->GetRun("r")->steps(), 0u);
}

TEST_F(HubTest, rejects_too_many_scalars_or_a_bad_scalar_name_in_band_naming_the_field) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  v1::StepReport many = Step(1, 0.2);
  for (int i = 0; i < 65; ++i) (*many.mutable_scalars())["s" + std::to_string(i)] = i;
  hub_->OnStep("r", many, *sink);
  v1::StepReport named = Step(1, 0.2);
  (*named.mutable_scalars())["data time"] = 1;
  hub_->OnStep("r", named, *sink);
  v1::StepReport long_name = Step(1, 0.2);
  (*long_name.mutable_scalars())[std::string(65, 'x')] = 1;
  hub_->OnStep("r", long_name, *sink);
  auto rejections = sink->Where([](auto& m) { return m.has_rejection(); });
  ASSERT_EQ(rejections.size(), 3u);
  EXPECT_EQ(rejections[0].rejection().reason(), "step 1: scalars has 65 entries; at most 64");
  EXPECT_EQ(rejections[1].rejection().reason(),
            "step 1: scalars name \"data time\" (9 bytes) is not 1 to 64 characters of [A-Za-z0-9_.:/-]");
  EXPECT_NE(rejections[2].rejection().reason().find("(65 bytes)"), std::string::npos);
  EXPECT_EQ(hub_->GetRun("r")->steps(), 0u);
  v1::StepReport fine = Step(1, 0.2);
  for (int i = 0; i < 64; ++i) (*fine.mutable_scalars())["s" + std::to_string(i)] = i;
  (*fine.mutable_scalars())[std::string(64, 'x')] = 1;
  fine.mutable_scalars()->erase("s0");
  hub_->OnStep("r", fine, *sink);
  EXPECT_EQ(hub_->GetRun("r")->steps(), 1u);
}

// A run's scalar_min.NAME raises a warning naming the scalar, stored with the run's events.
TEST_F(HubTest, a_scalar_past_its_limit_is_a_warning_event) {
  auto sink = std::make_shared<FakeSink>();
  v1::Hello hello = Hello("r");
  (*hello.mutable_config()->mutable_thresholds())["scalar_min.output_mean"] = 0.05;
  ASSERT_TRUE(hub_->OnHello(hello, sink).ok());
  for (uint64_t i = 1; i <= 3; ++i) {
    v1::StepReport s = Step(i, 0.2);
    (*s.mutable_scalars())["output_mean"] = i == 3 ? 0.01 : 0.4;
    hub_->OnStep("r", s, *sink);
  }
  store_->Flush();
  auto events = store_->ListEvents("r");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind(), "scalar_limit");
  EXPECT_EQ(events[0].step(), 3u);
  EXPECT_EQ(events[0].message(), "scalar output_mean 0.01 is below its limit scalar_min.output_mean = 0.05");
}

TEST_F(HubTest, acknowledges_stored_steps_cumulatively) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 40, *sink);
  store_->Flush();
  auto acks = sink->Where([](auto& m) { return m.has_ack(); });
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().ack().stored_through_step(), 40u);
}

// The store's thread writes each ack after releasing the run's lock, so that a slow write
// does not hold up the run's own reports: while an ack is being sent, another thread can
// still read the run (which takes that lock). A lock held would show as a read that does
// not finish within 10 s.
TEST_F(HubTest, writes_acks_with_the_runs_lock_released) {
  struct ProbingSink : FakeSink {
    void Send(const v1::MonitorMessage& m) override {
      FakeSink::Send(m);
      Hub* h = hub.load();
      if (!m.has_ack() || !h) return;
      auto read = std::async(std::launch::async, [h] { return h->GetRun("r").has_value(); });
      ++probed;
      if (read.wait_for(std::chrono::seconds(10)) == std::future_status::ready) return;
      ++blocked;
      std::lock_guard<std::mutex> lock(mu);
      late.push_back(std::move(read));  // finishes once the lock is released: not waited on here
    }
    std::atomic<Hub*> hub{nullptr};  // set after the hello, whose own ack is sent under the lock
    std::atomic<int> probed{0}, blocked{0};
    std::vector<std::future<bool>> late;
  };
  auto sink = std::make_shared<ProbingSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  sink->hub = hub_.get();
  Healthy("r", 1, 20, *sink);
  store_->Flush();
  EXPECT_GT(sink->probed.load(), 0);
  EXPECT_EQ(sink->blocked.load(), 0) << "an ack was written while the run's lock was held";
  for (auto& read : sink->late) read.wait();
  auto acks = sink->Where([](auto& m) { return m.has_ack(); });
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().ack().stored_through_step(), 20u);
}

// Steps are published only while someone watches (the update copies the whole report).
TEST_F(HubTest, a_watcher_gets_each_step_reported_while_it_watches) {
  struct Steps : Watcher {
    void Push(const v1::RunUpdate& u) override {
      if (u.has_step()) seen.push_back(u.step().step());
    }
    void End() override {}
    std::vector<uint64_t> seen;
  } watcher;
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 3, *sink);
  ASSERT_TRUE(hub_->Watch("r", &watcher));
  Healthy("r", 4, 6, *sink);
  hub_->Unwatch("r", &watcher);
  Healthy("r", 7, 8, *sink);
  EXPECT_EQ(watcher.seen, (std::vector<uint64_t>{4, 5, 6}));
  EXPECT_EQ(hub_->GetRun("r")->steps(), 8u);
}

TEST_F(HubTest, ignores_resent_steps) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 10, *sink);
  Healthy("r", 5, 12, *sink);
  store_->Flush();
  EXPECT_EQ(hub_->GetRun("r")->steps(), 12u);
  EXPECT_EQ(store_->StepCount("r").first, 12u);
}

TEST_F(HubTest, switches_on_clipping_after_a_critical_gradient_spike_in_guard_mode) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 60, *sink);
  hub_->OnStep("r", Step(61, 226.0), *sink);
  auto commands = sink->Where([](auto& m) { return m.has_command(); });
  ASSERT_FALSE(commands.empty());
  const auto& c = commands.front().command();
  ASSERT_TRUE(c.has_set_clipping()) << c.DebugString();
  EXPECT_EQ(c.set_clipping().kind(), v1::Clipping::KIND_NORM);
  EXPECT_GT(c.set_clipping().threshold(), 0.2);
  EXPECT_LT(c.set_clipping().threshold(), 5.0);
  EXPECT_EQ(c.issued_by(), "policy:guard");
  store_->Flush();
  auto events = store_->ListEvents("r");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().kind(), "grad_spike");
  EXPECT_EQ(events.front().step(), 61u);
}

TEST_F(HubTest, sends_no_command_in_observe_mode) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r", v1::MODE_OBSERVE), sink).ok());
  Healthy("r", 1, 60, *sink);
  hub_->OnStep("r", Step(61, 226.0), *sink);
  EXPECT_TRUE(sink->Where([](auto& m) { return m.has_command(); }).empty());
  store_->Flush();
  EXPECT_FALSE(store_->ListEvents("r").empty());
}

TEST_F(HubTest, answers_a_gated_step_with_a_verdict) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r", v1::MODE_GATED), sink).ok());
  Healthy("r", 1, 60, *sink);
  v1::StepReport spike = Step(61, std::nan(""));
  spike.set_awaiting_verdict(true);
  hub_->OnStep("r", spike, *sink);
  auto verdicts = sink->Where([](auto& m) { return m.has_verdict(); });
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_EQ(verdicts[0].verdict().step(), 61u);
  EXPECT_EQ(verdicts[0].verdict().decision(), v1::Verdict::DECISION_SKIP);
}

TEST_F(HubTest, completes_an_operator_command_on_ack_and_times_out_without_one) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 3, *sink);
  v1::Command lr;
  lr.set_scale_learning_rate(0.5);
  std::optional<bool> first, second;
  ASSERT_TRUE(hub_->SendCommand("r", lr, 1000, [&](auto&, bool acked) { first = acked; }).ok());
  ASSERT_TRUE(hub_->SendCommand("r", lr, 1000, [&](auto&, bool acked) { second = acked; }).ok());
  auto sent = sink->Where([](auto& m) { return m.has_command(); });
  ASSERT_EQ(sent.size(), 2u);
  v1::CommandAck ack;
  ack.set_command_id(sent[0].command().id());
  ack.set_applied_at_step(4);
  ack.set_result(v1::CommandAck::RESULT_APPLIED);
  hub_->OnCommandAck("r", ack);
  EXPECT_EQ(first, std::optional<bool>(true));
  EXPECT_FALSE(second.has_value());
  clock_.Advance(1001);
  hub_->Tick();
  EXPECT_EQ(second, std::optional<bool>(false));
}

TEST_F(HubTest, refuses_a_bad_operator_command) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  v1::Command lr;
  lr.set_scale_learning_rate(-2);
  Status bad = hub_->SendCommand("r", lr, 1000, nullptr);
  EXPECT_EQ(bad.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bad.message().find("scale_learning_rate"), std::string::npos);
  lr.set_scale_learning_rate(0.5);
  EXPECT_EQ(hub_->SendCommand("missing", lr, 1000, nullptr).code(), Status::Code::kNotFound);
}

TEST_F(HubTest, marks_a_run_failed_after_the_stall_timeout_and_finished_on_clean_close) {
  auto a = std::make_shared<FakeSink>(), b = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("broken"), a).ok());
  ASSERT_TRUE(hub_->OnHello(Hello("clean"), b).ok());
  Healthy("broken", 1, 1, *a);
  hub_->OnStreamClosed("broken", a.get(), /*clean=*/false);
  hub_->OnStreamClosed("clean", b.get(), /*clean=*/true);
  EXPECT_EQ(hub_->GetRun("broken")->state(), v1::RUN_STATE_DISCONNECTED);
  clock_.Advance(4'999);
  hub_->Tick();
  EXPECT_EQ(hub_->GetRun("broken")->state(), v1::RUN_STATE_DISCONNECTED);
  clock_.Advance(1);
  hub_->Tick();
  EXPECT_EQ(hub_->GetRun("broken")->state(), v1::RUN_STATE_FAILED);
  EXPECT_EQ(hub_->GetRun("clean")->state(), v1::RUN_STATE_FINISHED);
}

TEST_F(HubTest, keeps_runs_and_steps_across_a_restart_and_resumes_the_stream) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 30, *sink);
  store_->Flush();
  Open();  // a new hub and store on the same file
  auto run = hub_->GetRun("r");
  ASSERT_TRUE(run.has_value());
  EXPECT_EQ(run->state(), v1::RUN_STATE_DISCONNECTED);
  EXPECT_EQ(run->last_step(), 30u);
  auto again = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), again).ok());
  auto acks = again->Where([](auto& m) { return m.has_ack(); });
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.front().ack().stored_through_step(), 30u);
  Healthy("r", 25, 40, *again);  // resend overlaps
  store_->Flush();
  EXPECT_EQ(store_->StepCount("r").first, 40u);
}

TEST_F(HubTest, removes_metric_series_after_retention) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 3, *sink);
  hub_->OnStreamClosed("r", sink.get(), true);
  auto has_series = [&] {
    for (const auto& family : exporter_.registry()->Collect()) {
      for (const auto& m : family.metric) {
        for (const auto& l : m.label) if (l.name == "run_id" && l.value == "r") return true;
      }
    }
    return false;
  };
  EXPECT_TRUE(has_series());
  clock_.Advance(60'000);
  hub_->Tick();
  EXPECT_FALSE(has_series());
}

TEST_F(HubTest, undoes_a_clipping_command_by_restoring_the_clipping_before_it) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 3, *sink);
  v1::Command clip;
  clip.mutable_set_clipping()->set_kind(v1::Clipping::KIND_NORM);
  clip.mutable_set_clipping()->set_threshold(0.5);
  ASSERT_TRUE(hub_->SendCommand("r", clip, 1000, nullptr).ok());
  auto first = sink->Where([](auto& m) { return m.has_command(); }).back().command();
  v1::CommandAck ack;
  ack.set_command_id(first.id());
  ack.set_applied_at_step(4);
  ack.set_result(v1::CommandAck::RESULT_APPLIED);
  hub_->OnCommandAck("r", ack);
  store_->Flush();
  ASSERT_TRUE(hub_->Undo("r", first.id(), 1000, nullptr).ok());
  auto undo = sink->Where([](auto& m) { return m.has_command(); }).back().command();
  EXPECT_EQ(undo.set_clipping().kind(), v1::Clipping::KIND_OFF);  // what was in force before
  EXPECT_EQ(undo.reason(), "undo of " + first.id() + " (set_clipping)");
}

TEST_F(HubTest, undoes_a_learning_rate_scale_with_its_inverse_and_refuses_to_undo_a_rollback) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 3, *sink);
  v1::Command lr, rollback;
  lr.set_scale_learning_rate(0.25);
  rollback.mutable_rollback();
  ASSERT_TRUE(hub_->SendCommand("r", lr, 1000, nullptr).ok());
  ASSERT_TRUE(hub_->SendCommand("r", rollback, 1000, nullptr).ok());
  auto sent = sink->Where([](auto& m) { return m.has_command(); });
  store_->Flush();
  ASSERT_TRUE(hub_->Undo("r", sent[0].command().id(), 1000, nullptr).ok());
  EXPECT_DOUBLE_EQ(sink->Where([](auto& m) { return m.has_command(); }).back().command().scale_learning_rate(), 4.0);
  Status rollback_undo = hub_->Undo("r", sent[1].command().id(), 1000, nullptr);
  EXPECT_EQ(rollback_undo.code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(rollback_undo.message(), "a rollback cannot be undone (only clipping, learning-rate and mode commands)");
  Status unknown = hub_->Undo("r", "c-999999", 1000, nullptr);
  EXPECT_EQ(unknown.code(), Status::Code::kNotFound);
  EXPECT_EQ(unknown.message(), "run r has no command c-999999");
}

TEST_F(HubTest, lists_commands_with_the_run_before_and_after_them) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  for (uint64_t i = 1; i <= 20; ++i) hub_->OnStep("r", Step(i, 0.2, 0.8), *sink);
  v1::Command lr;
  lr.set_scale_learning_rate(0.5);
  ASSERT_TRUE(hub_->SendCommand("r", lr, 1000, nullptr).ok());
  v1::CommandAck ack;
  ack.set_command_id(sink->Where([](auto& m) { return m.has_command(); }).back().command().id());
  ack.set_applied_at_step(21);
  ack.set_result(v1::CommandAck::RESULT_APPLIED);
  hub_->OnCommandAck("r", ack);
  for (uint64_t i = 21; i <= 40; ++i) hub_->OnStep("r", Step(i, 0.1, 0.4), *sink);
  store_->Flush();
  auto records = hub_->ListCommands("r");
  ASSERT_EQ(records.size(), 1u);
  const auto& e = records[0].effect();
  EXPECT_EQ(e.steps_before(), 20u);
  EXPECT_DOUBLE_EQ(e.loss_before(), 0.8);
  EXPECT_EQ(e.steps_after(), 20u);
  EXPECT_DOUBLE_EQ(e.loss_after(), 0.4);
  EXPECT_DOUBLE_EQ(e.grad_norm_after(), 0.1);
}

TEST_F(HubTest, updates_a_live_runs_thresholds_and_refuses_unknown_ones) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r", v1::MODE_OBSERVE), sink).ok());
  Healthy("r", 1, 60, *sink);
  v1::Run updated;
  auto keep = [&](const Status& s, const v1::Run& r) {
    EXPECT_TRUE(s.ok()) << s.message();
    updated = r;
  };
  EXPECT_TRUE(hub_->UpdatePolicy("r", {{"spike_max_ratio", 2.0}}, {{"lr_scale", 0.25}}, keep).ok());
  hub_->AwaitRebuilds();
  EXPECT_DOUBLE_EQ(updated.config().thresholds().at("spike_max_ratio"), 2.0);
  EXPECT_DOUBLE_EQ(updated.config().policy().at("lr_scale"), 0.25);
  // A 2.5x jump was no event under the default 10x ratio; it is one now.
  hub_->OnStep("r", Step(61, 0.2 * 2.5 * 1.05), *sink);
  store_->Flush();
  EXPECT_FALSE(store_->ListEvents("r").empty());
  Status unknown = hub_->UpdatePolicy("r", {{"no_such_threshold", 1.0}}, {}, keep);
  EXPECT_EQ(unknown.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(unknown.message().find("no_such_threshold"), std::string::npos);
  EXPECT_NE(hub_->UpdatePolicy("r", {}, {{"lr_scale", 3.0}}, keep).message().find("lr_scale"), std::string::npos);
}

TEST_F(HubTest, refuses_a_hello_with_bad_policy_overrides) {
  auto sink = std::make_shared<FakeSink>();
  v1::Hello h = Hello("r");
  (*h.mutable_config()->mutable_policy())["max_recoveries"] = -1;
  EXPECT_NE(hub_->OnHello(h, sink).message().find("hello.config.policy: max_recoveries"), std::string::npos);
}

}  // namespace
}  // namespace gradwatch::monitor

namespace gradwatch::monitor {
namespace {

// The guard releases clipping it switched on itself after release_after quiet steps, and it
// still knows the clipping is its own after its policy is rebuilt: by a policy change, and
// by a restart (read back from the stored commands).
class PolicyClippingTest : public HubTest {
 protected:
  // A run whose spike at 61 made the guard clip, with steps up to 70 reporting it in force.
  std::shared_ptr<FakeSink> ClippedByTheGuard() {
    auto sink = std::make_shared<FakeSink>();
    v1::Hello hello = Hello("r");
    (*hello.mutable_config()->mutable_policy())["release_after"] = 20;
    EXPECT_TRUE(hub_->OnHello(hello, sink).ok());
    Healthy("r", 1, 60, *sink);
    hub_->OnStep("r", Step(61, 226.0), *sink);
    auto commands = sink->Where([](auto& m) { return m.has_command() && m.command().has_set_clipping(); });
    EXPECT_EQ(commands.size(), 1u);
    for (uint64_t i = 62; i <= 70; ++i) Quiet(i, *sink);
    return sink;
  }
  void Quiet(uint64_t step, FakeSink& sink) {
    v1::StepReport s = Step(step, 0.2);
    s.mutable_clipping()->set_kind(v1::Clipping::KIND_NORM);
    s.mutable_clipping()->set_threshold(1.0);
    hub_->OnStep("r", s, sink);
  }
  static size_t Releases(FakeSink& sink) {
    return sink
        .Where([](auto& m) {
          return m.has_command() && m.command().has_set_clipping() &&
                 m.command().set_clipping().kind() == v1::Clipping::KIND_OFF && m.command().issued_by() == "policy:guard";
        })
        .size();
  }
};

TEST_F(PolicyClippingTest, releases_its_clipping_after_quiet_steps_even_after_a_policy_change) {
  auto sink = ClippedByTheGuard();
  ASSERT_TRUE(hub_->UpdatePolicy("r", {}, {{"lr_scale", 0.25}}, [](const Status&, const v1::Run&) {}).ok());
  hub_->AwaitRebuilds();
  for (uint64_t i = 71; i <= 100; ++i) Quiet(i, *sink);
  EXPECT_EQ(Releases(*sink), 1u);
}

TEST_F(PolicyClippingTest, releases_its_clipping_after_a_restart) {
  auto sink = ClippedByTheGuard();
  store_->Flush();
  Open();  // a new hub and store on the same file
  auto again = std::make_shared<FakeSink>();
  v1::Hello hello = Hello("r");
  (*hello.mutable_config()->mutable_policy())["release_after"] = 20;
  ASSERT_TRUE(hub_->OnHello(hello, again).ok());
  hub_->AwaitRebuilds();
  for (uint64_t i = 71; i <= 100; ++i) Quiet(i, *again);
  EXPECT_EQ(Releases(*again), 1u);
}

TEST_F(PolicyClippingTest, never_releases_clipping_an_operator_switched_on) {
  auto sink = std::make_shared<FakeSink>();
  v1::Hello hello = Hello("r");
  (*hello.mutable_config()->mutable_policy())["release_after"] = 20;
  ASSERT_TRUE(hub_->OnHello(hello, sink).ok());
  Healthy("r", 1, 10, *sink);
  v1::Command clip;
  clip.mutable_set_clipping()->set_kind(v1::Clipping::KIND_NORM);
  clip.mutable_set_clipping()->set_threshold(1.0);
  clip.set_issued_by("cli:alice");
  ASSERT_TRUE(hub_->SendCommand("r", clip, 0, {}).ok());
  for (uint64_t i = 11; i <= 60; ++i) Quiet(i, *sink);
  ASSERT_TRUE(hub_->UpdatePolicy("r", {}, {{"lr_scale", 0.25}}, [](const Status&, const v1::Run&) {}).ok());
  hub_->AwaitRebuilds();
  for (uint64_t i = 61; i <= 100; ++i) Quiet(i, *sink);
  EXPECT_EQ(Releases(*sink), 0u);
}

}  // namespace
}  // namespace gradwatch::monitor
