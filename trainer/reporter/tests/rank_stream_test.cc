// The reporter's data-parallel duties against a scripted monitor (a fake Telemetry service on
// 127.0.0.1:0 that records what arrives and sends what the test tells it): heartbeats from the
// sender thread while a phase lasts, and commands and verdicts taken by rank 0 only; and how an
// eval report is acknowledged (apart from its step, or with it by an older monitor).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "gradwatch/reporter/reporter.h"
#include "gradwatch/v1/telemetry.grpc.pb.h"

namespace gradwatch::reporter {
namespace {

using namespace std::chrono_literals;

// Accepts one stream at a time: acknowledges the hello, records every message, and writes what
// Send() is given.
class ScriptedMonitor final : public v1::Telemetry::Service {
 public:
  ScriptedMonitor() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~ScriptedMonitor() override {
    server_->Shutdown(std::chrono::system_clock::now() + 2s);  // waits for the handler to return
    server_.reset();
    // The handler's last writes were under mu_: taking it orders them before the members go
    // (what ThreadSanitizer can see; gRPC's own threads are not instrumented).
    std::lock_guard<std::mutex> lock(mu_);
    received_.clear();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  grpc::Status Stream(grpc::ServerContext*,
                      grpc::ServerReaderWriter<v1::MonitorMessage, v1::TrainerMessage>* stream) override {
    v1::TrainerMessage in;
    while (stream->Read(&in)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (in.has_hello()) {
        stream_ = stream;
        v1::MonitorMessage ack;
        ack.mutable_ack()->set_stored_through_step(0);
        stream->Write(ack);
      }
      if (in.has_step()) {  // stored at once
        v1::MonitorMessage ack;
        ack.mutable_ack()->set_stored_through_step(in.step().step());
        if (evals_stored_) ack.mutable_ack()->set_stored_evals_through_step(*evals_stored_);
        stream->Write(ack);
      }
      received_.push_back(in);
      changed_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    stream_ = nullptr;
    return grpc::Status::OK;
  }

  // Waits up to 10 s until `done` holds for the messages received so far.
  template <typename Pred>
  bool WaitFor(Pred done) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, 10s, [&] { return done(received_); });
  }

  // From now on every step's ack says that evals are stored through `step` (a monitor that
  // acknowledges evals apart); without it, acks carry steps only (an older monitor).
  void AckEvalsThrough(uint64_t step) {
    std::lock_guard<std::mutex> lock(mu_);
    evals_stored_ = step;
  }

  void Send(const v1::MonitorMessage& m) {
    std::lock_guard<std::mutex> lock(mu_);
    ASSERT_NE(stream_, nullptr);
    stream_->Write(m);
  }

  std::vector<v1::Heartbeat> Heartbeats() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::Heartbeat> out;
    for (const auto& m : received_) {
      if (m.has_heartbeat()) out.push_back(m.heartbeat());
    }
    return out;
  }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<v1::TrainerMessage> received_;
  grpc::ServerReaderWriter<v1::MonitorMessage, v1::TrainerMessage>* stream_ = nullptr;
  std::optional<uint64_t> evals_stored_;
};

size_t CountHeartbeats(const std::vector<v1::TrainerMessage>& ms, v1::Heartbeat::Phase phase, uint64_t step) {
  size_t n = 0;
  for (const auto& m : ms) n += m.has_heartbeat() && m.heartbeat().phase() == phase && m.heartbeat().step() == step;
  return n;
}

v1::Hello RankHello(uint32_t rank, uint32_t world) {
  v1::Hello h;
  h.set_run_id("job");
  h.set_rank(rank);
  h.set_world_size(world);
  h.set_mode(v1::MODE_GATED);
  return h;
}

ReporterOptions Options(const std::string& address, std::chrono::milliseconds heartbeat) {
  ReporterOptions o;
  o.address = address;
  o.log_warnings = false;
  o.heartbeat_interval = heartbeat;
  return o;
}

v1::StepReport Step(uint64_t step) {
  v1::StepReport s;
  s.set_step(step);
  return s;
}

TEST(Reporter, sends_heartbeats_while_a_phase_lasts_naming_the_step_and_phase) {
  ScriptedMonitor m;
  Reporter r(Options(m.address(), 20ms), RankHello(1, 2));
  r.SetPhase(7, v1::Heartbeat::PHASE_COLLECTIVE);
  ASSERT_TRUE(m.WaitFor([](const auto& ms) { return CountHeartbeats(ms, v1::Heartbeat::PHASE_COLLECTIVE, 7) >= 3; }));
  r.SetPhase(8, v1::Heartbeat::PHASE_COMPUTE);
  ASSERT_TRUE(m.WaitFor([](const auto& ms) { return CountHeartbeats(ms, v1::Heartbeat::PHASE_COMPUTE, 8) >= 1; }));
  r.SetPhase(8, v1::Heartbeat::PHASE_UNSPECIFIED);  // no phase: no more heartbeats
  r.Close(2s);
  auto beats = m.Heartbeats();
  ASSERT_GE(beats.size(), 4u);
  // Repeats of one phase carry the time it was entered, not the time they were sent.
  EXPECT_EQ(beats[0].phase_unix_millis(), beats[1].phase_unix_millis());
  EXPECT_GT(beats[0].phase_unix_millis(), 0);
  EXPECT_EQ(beats.back().step(), 8u);
  EXPECT_LE(beats[0].phase_unix_millis(), beats.back().phase_unix_millis());
  EXPECT_EQ(r.stats().heartbeats, beats.size());
}

TEST(Reporter, sends_no_heartbeat_while_phases_are_shorter_than_the_interval) {
  ScriptedMonitor m;
  Reporter r(Options(m.address(), 1h), RankHello(0, 2));
  for (uint64_t step = 1; step <= 50; ++step) {
    r.SetPhase(step, v1::Heartbeat::PHASE_COMPUTE);
    r.SetPhase(step, v1::Heartbeat::PHASE_COLLECTIVE);
    r.Report(Step(step));
  }
  ASSERT_TRUE(r.Flush(10s));
  r.Close(2s);
  EXPECT_TRUE(m.Heartbeats().empty());
  EXPECT_EQ(r.stats().heartbeats, 0u);
}

// A command and a verdict, then step 2 reported and acknowledged: one stream keeps order, so
// once the ack is in, the command and the verdict were taken or dropped before it.
void SendCommandAndVerdict(ScriptedMonitor& m, Reporter& r) {
  r.Report(Step(1));
  ASSERT_TRUE(r.Flush(10s));
  v1::MonitorMessage command, verdict;
  command.mutable_command()->set_id("c-1");
  command.mutable_command()->mutable_stop();
  verdict.mutable_verdict()->set_step(2);
  verdict.mutable_verdict()->set_decision(v1::Verdict::DECISION_SKIP);
  m.Send(command);
  m.Send(verdict);
  r.Report(Step(2));
  ASSERT_TRUE(r.Flush(10s));
}

TEST(Reporter, another_rank_drops_commands_and_verdicts) {
  ScriptedMonitor m;
  Reporter r(Options(m.address(), 1h), RankHello(1, 2));
  SendCommandAndVerdict(m, r);
  EXPECT_EQ(r.PendingCommands(), 0u);
  EXPECT_TRUE(r.TakeCommands().empty());
  EXPECT_FALSE(r.AwaitVerdict(2, 0ms).has_value());
  EXPECT_EQ(r.stats().ignored_commands, 2u);
}

TEST(Reporter, rank_zero_takes_commands_and_verdicts) {
  ScriptedMonitor m;
  Reporter r(Options(m.address(), 1h), RankHello(0, 2));
  SendCommandAndVerdict(m, r);
  EXPECT_EQ(r.PendingCommands(), 1u);
  auto commands = r.TakeCommands();
  ASSERT_EQ(commands.size(), 1u);
  EXPECT_EQ(commands[0].id(), "c-1");
  auto verdict = r.AwaitVerdict(2, 0ms);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->decision(), v1::Verdict::DECISION_SKIP);
  EXPECT_EQ(r.stats().ignored_commands, 0u);
}

v1::EvalReport Eval(uint64_t step) {
  v1::EvalReport e;
  e.set_step(step);
  e.set_loss(0.5);
  return e;
}

// An eval comes after its step and may be stored a commit later: the step's ack must not
// release it, or a monitor that dies in between loses it.
TEST(Reporter, keeps_an_eval_until_the_monitor_acknowledges_evals_through_its_step) {
  ScriptedMonitor m;
  m.AckEvalsThrough(0);
  Reporter r(Options(m.address(), 1h), RankHello(0, 1));
  r.Report(Step(1));
  r.Report(Eval(1));
  r.Report(Step(2));
  ASSERT_TRUE(m.WaitFor([](const auto& ms) { return ms.size() >= 4; }));  // hello, step, eval, step
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (r.stats().acked_through < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  ASSERT_EQ(r.stats().acked_through, 2u);
  EXPECT_FALSE(r.Flush(0ms)) << "the eval was released by its step's ack";
  v1::MonitorMessage ack;
  ack.mutable_ack()->set_stored_through_step(2);
  ack.mutable_ack()->set_stored_evals_through_step(1);
  m.Send(ack);
  EXPECT_TRUE(r.Flush(10s));
}

TEST(Reporter, takes_an_eval_as_stored_with_its_step_from_a_monitor_that_acks_steps_only) {
  ScriptedMonitor m;
  Reporter r(Options(m.address(), 1h), RankHello(0, 1));
  r.Report(Step(1));
  r.Report(Eval(1));
  r.Report(Step(2));
  EXPECT_TRUE(r.Flush(10s));
}

}  // namespace
}  // namespace gradwatch::reporter
