// The hub with a real store in a temp folder, a fake stream and a fake clock.
#include "gradwatch/monitor/hub.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "gradwatch/metrics/exporter.h"
#include <prometheus/registry.h>
#include <cmath>
#include "gradwatch/store/store.h"

namespace gradwatch::monitor {
namespace {

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
    so.on_committed = [this](const std::map<std::string, uint64_t>& s) {
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

TEST_F(HubTest, acknowledges_stored_steps_cumulatively) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 40, *sink);
  store_->Flush();
  auto acks = sink->Where([](auto& m) { return m.has_ack(); });
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().ack().stored_through_step(), 40u);
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

// A run with steps is one trainer's: another process with the same run id is refused
// instead of having its steps taken as resends.
TEST_F(HubTest, refuses_a_second_trainer_on_a_run_that_holds_steps_and_says_how_to_resume) {
  auto first = std::make_shared<FakeSink>(), second = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), first).ok());
  Healthy("r", 1, 10, *first);
  hub_->OnStreamClosed("r", first.get(), /*clean=*/true);
  v1::Hello other = Hello("r");
  other.set_trainer_instance(7);
  Status refused = hub_->OnHello(other, second);
  EXPECT_EQ(refused.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(refused.message().find("already holds steps up to 10"), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("resume_after_step 10"), std::string::npos) << refused.message();
  other.set_resume_after_step(10);  // an explicit resume is taken
  EXPECT_TRUE(hub_->OnHello(other, second).ok());
  EXPECT_EQ(hub_->GetRun("r")->state(), v1::RUN_STATE_RUNNING);
}

TEST_F(HubTest, takes_back_the_same_trainer_after_its_run_ended) {
  auto sink = std::make_shared<FakeSink>(), again = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 10, *sink);
  hub_->OnStreamClosed("r", sink.get(), /*clean=*/false);
  clock_.Advance(5'000);
  hub_->Tick();
  ASSERT_EQ(hub_->GetRun("r")->state(), v1::RUN_STATE_FAILED);
  EXPECT_TRUE(hub_->OnHello(Hello("r"), again).ok());  // e.g. its spool replayed
}

TEST_F(HubTest, counts_only_live_runs_against_the_run_limit) {
  options_.max_runs = 2;
  Open();
  std::vector<std::shared_ptr<FakeSink>> sinks;
  for (const char* id : {"a", "b", "c", "d"}) {
    sinks.push_back(std::make_shared<FakeSink>());
    ASSERT_TRUE(hub_->OnHello(Hello(id), sinks.back()).ok()) << id;
    Healthy(id, 1, 2, *sinks.back());
    hub_->OnStreamClosed(id, sinks.back().get(), /*clean=*/true);
  }
  auto e = std::make_shared<FakeSink>(), f = std::make_shared<FakeSink>(), g = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("e"), e).ok());
  ASSERT_TRUE(hub_->OnHello(Hello("f"), f).ok());
  Status full = hub_->OnHello(Hello("g"), g);
  EXPECT_EQ(full.code(), Status::Code::kResourceExhausted);
  EXPECT_NE(full.message().find("2 live runs"), std::string::npos) << full.message();
  hub_->OnStreamClosed("e", e.get(), true);
  store_->Flush();
  Open();  // after a restart the ended runs still do not count; f is live (disconnected)
  EXPECT_TRUE(hub_->OnHello(Hello("g"), g).ok());
  EXPECT_EQ(hub_->ListRuns().size(), 7u);
}

TEST_F(HubTest, ended_runs_leave_memory_after_retention_and_stay_readable) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  Healthy("r", 1, 5, *sink);
  hub_->OnStreamClosed("r", sink.get(), /*clean=*/true);
  clock_.Advance(60'000);
  hub_->Tick();  // series removed
  hub_->Tick();  // and out of memory
  store_->Flush();
  auto run = hub_->GetRun("r");
  ASSERT_TRUE(run.has_value());
  EXPECT_EQ(run->state(), v1::RUN_STATE_FINISHED);
  EXPECT_EQ(run->steps(), 5u);
  ASSERT_EQ(hub_->ListRuns().size(), 1u);
  auto again = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), again).ok());
  Healthy("r", 6, 8, *again);
  store_->Flush();
  EXPECT_EQ(store_->StepCount("r"), (std::pair<uint64_t, uint64_t>{8, 8}));
}

TEST_F(HubTest, a_run_without_steps_ends_when_its_stream_breaks) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  hub_->OnStreamClosed("r", sink.get(), /*clean=*/false);
  EXPECT_EQ(hub_->GetRun("r")->state(), v1::RUN_STATE_FAILED);
}

TEST_F(HubTest, rejects_steps_past_int64_in_band_and_keeps_taking_later_steps) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  hub_->OnStep("r", Step(UINT64_MAX, 0.2), *sink);
  hub_->OnStep("r", Step(kMaxStep + 1, 0.2), *sink);
  Healthy("r", 1, 3, *sink);
  store_->Flush();
  auto rejections = sink->Where([](auto& m) { return m.has_rejection(); });
  ASSERT_EQ(rejections.size(), 2u);
  EXPECT_NE(rejections[0].rejection().reason().find("steps run from 1 to 9223372036854775807"), std::string::npos);
  EXPECT_EQ(store_->StepCount("r"), (std::pair<uint64_t, uint64_t>{3, 3}));
  EXPECT_EQ(sink->Where([](auto& m) { return m.has_ack(); }).back().ack().stored_through_step(), 3u);
}

TEST_F(HubTest, rejects_an_eval_ahead_of_the_steps_and_never_acks_it) {
  auto sink = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(Hello("r"), sink).ok());
  v1::EvalReport eval;
  eval.set_step(1'000'000);
  eval.set_loss(0.3);
  hub_->OnEval("r", eval, *sink);
  store_->Flush();
  EXPECT_TRUE(store_->ListEvals("r").empty());
  for (const auto& m : sink->Where([](auto& m) { return m.has_ack(); })) {
    EXPECT_EQ(m.ack().stored_through_step(), 0u);
  }
  auto rejections = sink->Where([](auto& m) { return m.has_rejection(); });
  ASSERT_EQ(rejections.size(), 1u);
  EXPECT_NE(rejections[0].rejection().reason().find("before that step's report"), std::string::npos);
}

TEST_F(HubTest, refuses_a_hello_with_oversized_text_naming_the_field) {
  auto sink = std::make_shared<FakeSink>();
  v1::Hello h = Hello("r");
  h.set_host(std::string(4 << 20, 'h'));
  Status refused = hub_->OnHello(h, sink);
  EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(refused.message().find("hello.host is 4194304 bytes, the limit is 256"), std::string::npos)
      << refused.message();
  h = Hello("r");
  (*h.mutable_config()->mutable_labels())["k"] = std::string(2000, 'v');
  EXPECT_NE(hub_->OnHello(h, sink).message().find("hello.config.labels[k]"), std::string::npos);
  EXPECT_TRUE(hub_->ListRuns().empty());
}

}  // namespace
}  // namespace gradwatch::monitor
