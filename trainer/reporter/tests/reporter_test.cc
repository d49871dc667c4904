// The reporter against a real in-process monitor on 127.0.0.1:0.
#include "gradwatch/reporter/reporter.h"
#include "gradwatch/reporter/spool.h"

#include <fstream>

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <thread>

#include "gradwatch/monitor/server.h"

namespace gradwatch::reporter {
namespace {

using namespace std::chrono_literals;

struct Monitor {
  explicit Monitor(const std::string& name, int port = 0) {
    dir = std::filesystem::temp_directory_path() /
          ("gradwatch-reporter-" + std::to_string(::getpid()) + "-" + name);
    if (port == 0) std::filesystem::remove_all(dir);
    monitor::ServerConfig config;
    config.listen = "127.0.0.1:" + std::to_string(port);
    config.metrics_listen = "127.0.0.1:0";
    config.data_dir = dir.string();
    server = std::make_unique<monitor::Server>(config, clock);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(server->grpc_port()); }

  monitor::SystemClock clock;
  std::filesystem::path dir;
  std::unique_ptr<monitor::Server> server;
};

v1::Hello MakeHello(const std::string& run_id, v1::Mode mode = v1::MODE_OBSERVE) {
  v1::Hello h;
  h.set_run_id(run_id);
  h.add_layer_names("fc.weight");
  h.add_layer_names("fc.bias");
  h.set_mode(mode);
  return h;
}

v1::StepReport MakeStep(uint64_t step) {
  v1::StepReport s;
  s.set_step(step);
  s.set_loss(1.0 / step);
  s.set_grad_norm(0.2);
  s.add_layer_grad_norms(0.15f);
  s.add_layer_grad_norms(0.05f);
  return s;
}

ReporterOptions Options(const std::string& address) {
  ReporterOptions o;
  o.address = address;
  o.backoff_initial = 50ms;
  o.backoff_max = 200ms;
  o.log_warnings = false;
  return o;
}

TEST(Reporter, streams_steps_that_the_monitor_stores_and_acknowledges) {
  Monitor m("basic");
  Reporter r(Options(m.address()), MakeHello("basic"));
  for (uint64_t i = 1; i <= 100; ++i) r.Report(MakeStep(i));
  ASSERT_TRUE(r.Flush(10s));
  EXPECT_EQ(r.stats().acked_through, 100u);
  r.Close(5s);
  m.server->Shutdown();  // waits for the server side of the stream to end too
  auto run = m.server->hub().GetRun("basic");
  ASSERT_TRUE(run.has_value());
  EXPECT_EQ(run->steps(), 100u);
  EXPECT_EQ(run->state(), v1::RUN_STATE_FINISHED);
}

// Report() writes a step itself once the stream is up, and the stream's acceptance wakes the
// sender for what was buffered before: neither waits for the sender's tick.
TEST(Reporter, sends_each_step_without_waiting_for_the_senders_tick) {
  Monitor m("no-tick");
  ReporterOptions o = Options(m.address());
  o.send_interval = std::chrono::hours(1);
  o.heartbeat_interval = std::chrono::hours(1);
  Reporter r(o, MakeHello("no-tick"));
  r.Report(MakeStep(1));  // before the hello's answer: buffered
  const auto acked = [&](uint64_t step) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (r.stats().acked_through < step && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    return r.stats().acked_through >= step;
  };
  ASSERT_TRUE(acked(1)) << "the buffered step waited for the tick";
  for (uint64_t i = 2; i <= 20; ++i) r.Report(MakeStep(i));
  ASSERT_TRUE(acked(20)) << "acked through " << r.stats().acked_through;
  EXPECT_EQ(r.stats().sent, 20u);  // each once
}

TEST(Reporter, keeps_reports_while_the_monitor_is_away_and_resends_them) {
  int port;
  {
    Monitor probe("port-probe");
    port = probe.server->grpc_port();
  }
  Reporter r(Options("127.0.0.1:" + std::to_string(port)), MakeHello("late"));
  for (uint64_t i = 1; i <= 30; ++i) r.Report(MakeStep(i));  // returns at once, no monitor
  EXPECT_FALSE(r.Flush(100ms));
  EXPECT_FALSE(r.stats().connected);
  Monitor m("late", port);
  ASSERT_TRUE(r.Flush(15s)) << r.stats().last_error;
  EXPECT_EQ(m.server->hub().GetRun("late")->steps(), 30u);
}

TEST(Reporter, counts_reports_dropped_when_the_buffer_is_full) {
  ReporterOptions o = Options("127.0.0.1:1");  // nothing listens there
  o.max_buffered = 10;
  Reporter r(o, MakeHello("full"));
  for (uint64_t i = 1; i <= 25; ++i) r.Report(MakeStep(i));
  EXPECT_EQ(r.stats().reported, 25u);
  EXPECT_EQ(r.stats().dropped, 15u);
}

TEST(Reporter, delivers_an_operator_command_and_its_acknowledgement) {
  Monitor m("command");
  Reporter r(Options(m.address()), MakeHello("command", v1::MODE_GUARD));
  r.Report(MakeStep(1));
  ASSERT_TRUE(r.Flush(10s));
  std::promise<std::pair<v1::CommandRecord, bool>> result;
  v1::Command clip;
  clip.mutable_set_clipping()->set_kind(v1::Clipping::KIND_NORM);
  clip.mutable_set_clipping()->set_threshold(1.0);
  Status sent = m.server->hub().SendCommand(
      "command", clip, 10'000,
      [&](const v1::CommandRecord& rec, bool acked) { result.set_value({rec, acked}); });
  ASSERT_TRUE(sent.ok()) << sent.message();
  std::vector<v1::Command> got = r.AwaitCommands(10s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_DOUBLE_EQ(got[0].set_clipping().threshold(), 1.0);
  v1::CommandAck ack;
  ack.set_command_id(got[0].id());
  ack.set_applied_at_step(2);
  ack.set_result(v1::CommandAck::RESULT_APPLIED);
  r.AckCommand(ack);
  auto future = result.get_future();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  auto [record, acked] = future.get();
  EXPECT_TRUE(acked);
  EXPECT_EQ(record.ack().applied_at_step(), 2u);
}

TEST(Reporter, waits_for_a_gated_verdict) {
  Monitor m("gated");
  Reporter r(Options(m.address()), MakeHello("gated", v1::MODE_GATED));
  r.Report(MakeStep(1));
  ASSERT_TRUE(r.Flush(10s));
  v1::StepReport s = MakeStep(2);
  s.set_awaiting_verdict(true);
  r.Report(s);
  auto verdict = r.AwaitVerdict(2, 10s);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->step(), 2u);
  EXPECT_EQ(verdict->decision(), v1::Verdict::DECISION_PROCEED);
}

TEST(Reporter, fails_open_when_no_verdict_can_come) {
  Reporter r(Options("127.0.0.1:1"), MakeHello("nogate", v1::MODE_GATED));
  v1::StepReport s = MakeStep(1);
  s.set_awaiting_verdict(true);
  r.Report(s);
  EXPECT_FALSE(r.AwaitVerdict(1, 50ms).has_value());
  EXPECT_EQ(r.stats().gate_timeouts, 1u);
}

TEST(Reporter, gives_up_when_the_monitor_refuses_the_run) {
  Monitor m("refused");
  Reporter r(Options(m.address()), MakeHello("bad run id!"));
  r.Report(MakeStep(1));
  EXPECT_FALSE(r.Flush(5s));
  EXPECT_NE(r.stats().last_error.find("run_id"), std::string::npos) << r.stats().last_error;
}

}  // namespace
}  // namespace gradwatch::reporter

namespace gradwatch::reporter {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("gradwatch-spool-" + std::to_string(::getpid()) + "-" + name + ".spool")).string();
}

TEST(Spool, checks_records_with_the_standard_crc32) {
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);  // the CRC-32 check value
  EXPECT_EQ(Crc32(""), 0u);
}

TEST(Spool, reads_back_the_hello_and_every_record_in_order) {
  std::string path = TempPath("roundtrip");
  {
    Spool spool(path, 1 << 20, MakeHello("spooled"));
    for (uint64_t i = 1; i <= 5; ++i) {
      v1::TrainerMessage m;
      *m.mutable_step() = MakeStep(i);
      ASSERT_TRUE(spool.Append(m));
    }
  }
  SpoolContents c = Spool::Read(path);
  ASSERT_EQ(c.error, "");
  ASSERT_EQ(c.messages.size(), 6u);
  EXPECT_EQ(c.messages[0].hello().run_id(), "spooled");
  EXPECT_EQ(c.messages[5].step().step(), 5u);
  EXPECT_EQ(c.skipped_bytes, 0u);
}

TEST(Spool, stops_at_a_corrupt_record_and_counts_the_bytes_it_skipped) {
  std::string path = TempPath("corrupt");
  {
    Spool spool(path, 1 << 20, MakeHello("c"));
    for (uint64_t i = 1; i <= 3; ++i) {
      v1::TrainerMessage m;
      *m.mutable_step() = MakeStep(i);
      spool.Append(m);
    }
  }
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(-3, std::ios::end);
  f.put('\x7f');  // flip a byte of the last record
  f.close();
  SpoolContents c = Spool::Read(path);
  EXPECT_EQ(c.messages.size(), 3u);  // hello + steps 1 and 2
  EXPECT_GT(c.skipped_bytes, 0u);
}

TEST(Spool, refuses_records_past_its_size_limit) {
  Spool spool(TempPath("full"), 200, MakeHello("f"));
  v1::TrainerMessage m;
  *m.mutable_step() = MakeStep(1);
  int appended = 0;
  while (spool.Append(m) && appended < 100) ++appended;
  EXPECT_GT(appended, 0);
  EXPECT_LT(appended, 100);
}

TEST(Reporter, spools_what_overflows_its_buffer_and_delivers_it_when_the_monitor_is_back) {
  int port;
  {
    Monitor probe("spool-port");
    port = probe.server->grpc_port();
  }
  ReporterOptions o = Options("127.0.0.1:" + std::to_string(port));
  o.max_buffered = 10;
  o.spool_path = TempPath("overflow");
  Reporter r(o, MakeHello("overflow"));
  for (uint64_t i = 1; i <= 50; ++i) r.Report(MakeStep(i));
  EXPECT_EQ(r.stats().spooled, 40u);
  EXPECT_EQ(r.stats().dropped, 0u);
  Monitor m("overflow", port);
  ASSERT_TRUE(r.Flush(15s)) << r.stats().last_error;
  r.Close(5s);
  auto [count, last] = m.server->hub().GetRun("overflow").has_value()
                           ? std::pair<uint64_t, uint64_t>{m.server->hub().GetRun("overflow")->steps(),
                                                           m.server->hub().GetRun("overflow")->last_step()}
                           : std::pair<uint64_t, uint64_t>{0, 0};
  EXPECT_EQ(count, 50u);
  EXPECT_EQ(last, 50u);
}

}  // namespace
}  // namespace gradwatch::reporter
