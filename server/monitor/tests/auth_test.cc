// Access control end to end: the whole monitor with a tokens file, called over gRPC with
// no token, a viewer token, an operator token and reporter tokens.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "auth.h"
#include "gradwatch/monitor/server.h"
#include "gradwatch/v1/jobs.grpc.pb.h"
#include "gradwatch/v1/runs.grpc.pb.h"
#include "gradwatch/v1/telemetry.grpc.pb.h"

namespace gradwatch::monitor {
namespace {

constexpr char kOperator[] = "operator-token-0123456789";
constexpr char kViewer[] = "viewer-token-0123456789";
constexpr char kReporter[] = "reporter-token-0123456789";  // for run "mine"

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gradwatch-auth-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "tokens.json") << R"({"tokens": [
      {"token": ")" << kOperator << R"(", "role": "operator"},
      {"token": ")" << kViewer << R"(", "role": "viewer"},
      {"token": ")" << kReporter << R"(", "role": "reporter", "run_id": "mine"}]})";
    ServerConfig c;
    c.listen = "127.0.0.1:0";
    c.metrics_listen = "";
    c.data_dir = (dir_ / "data").string();
    c.tokens_file = (dir_ / "tokens.json").string();
    server_ = std::make_unique<Server>(c, clock_);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
  }

  void Authorize(grpc::ClientContext& ctx, const char* token) {
    if (token) ctx.AddMetadata("authorization", std::string("Bearer ") + token);
  }

  grpc::Status ListRuns(const char* token) {
    grpc::ClientContext ctx;
    Authorize(ctx, token);
    v1::ListRunsResponse resp;
    return v1::Runs::NewStub(channel_)->ListRuns(&ctx, {}, &resp);
  }

  grpc::Status SendStop(const char* token) {
    grpc::ClientContext ctx;
    Authorize(ctx, token);
    v1::SendCommandRequest req;
    req.set_run_id("mine");
    req.mutable_command()->mutable_stop();
    v1::SendCommandResponse resp;
    return v1::Runs::NewStub(channel_)->SendCommand(&ctx, req, &resp);
  }

  // Opens a telemetry stream with a hello for `run_id`; the status it ends with, or OK
  // once the hello was acknowledged.
  grpc::Status Hello(const char* token, const std::string& run_id) {
    grpc::ClientContext ctx;
    Authorize(ctx, token);
    auto stream = v1::Telemetry::NewStub(channel_)->Stream(&ctx);
    v1::TrainerMessage hello;
    hello.mutable_hello()->set_run_id(run_id);
    stream->Write(hello);
    v1::MonitorMessage reply;
    if (stream->Read(&reply)) {
      stream->WritesDone();
      while (stream->Read(&reply)) {
      }
      return stream->Finish();
    }
    return stream->Finish();
  }

  // Every call of the Runs and Jobs services, with the role it needs.
  struct Call {
    const char* name;
    Role need;
    std::function<grpc::Status(grpc::ClientContext*)> invoke;
  };

  std::vector<Call> EveryCall() {
    auto runs = std::shared_ptr<v1::Runs::Stub>(v1::Runs::NewStub(channel_));
    auto jobs = std::shared_ptr<v1::Jobs::Stub>(v1::Jobs::NewStub(channel_));
    v1::SendCommandRequest command;
    command.set_run_id("mine");
    command.mutable_command()->mutable_stop();
    v1::UndoCommandRequest undo;
    undo.set_run_id("mine");
    undo.set_command_id("c-000001");
    v1::UpdatePolicyRequest policy;
    policy.set_run_id("mine");
    v1::LaunchRequest launch;
    launch.set_config_json(R"({"steps": 10})");
    launch.set_run_id("launched");
    v1::StopJobRequest stop;
    stop.set_job_id("launched");
    v1::GetJobRequest get_job;
    get_job.set_job_id("launched");
    v1::GetRunRequest get_run;
    get_run.set_run_id("mine");
    v1::ExplainRunRequest explain;
    explain.set_run_id("mine");
    v1::ListStepsRequest steps;
    steps.set_run_id("mine");
    return {
        {"Runs.SendCommand", Role::kOperator,
         [=](grpc::ClientContext* c) { v1::SendCommandResponse r; return runs->SendCommand(c, command, &r); }},
        {"Runs.UndoCommand", Role::kOperator,
         [=](grpc::ClientContext* c) { v1::SendCommandResponse r; return runs->UndoCommand(c, undo, &r); }},
        {"Runs.UpdatePolicy", Role::kOperator,
         [=](grpc::ClientContext* c) { v1::Run r; return runs->UpdatePolicy(c, policy, &r); }},
        {"Jobs.Launch", Role::kOperator,
         [=](grpc::ClientContext* c) { v1::Job r; return jobs->Launch(c, launch, &r); }},
        {"Jobs.StopJob", Role::kOperator,
         [=](grpc::ClientContext* c) { v1::Job r; return jobs->StopJob(c, stop, &r); }},
        {"Jobs.ListJobs", Role::kViewer,
         [=](grpc::ClientContext* c) { v1::ListJobsResponse r; return jobs->ListJobs(c, {}, &r); }},
        {"Jobs.GetJob", Role::kViewer,
         [=](grpc::ClientContext* c) { v1::Job r; return jobs->GetJob(c, get_job, &r); }},
        {"Jobs.Logs", Role::kViewer,
         [=](grpc::ClientContext* c) {
           v1::LogsRequest req;
           req.set_job_id("launched");
           auto reader = jobs->Logs(c, req);
           v1::LogChunk chunk;
           while (reader->Read(&chunk)) {
           }
           return reader->Finish();
         }},
        {"Runs.ListRuns", Role::kViewer,
         [=](grpc::ClientContext* c) { v1::ListRunsResponse r; return runs->ListRuns(c, {}, &r); }},
        {"Runs.GetRun", Role::kViewer,
         [=](grpc::ClientContext* c) { v1::Run r; return runs->GetRun(c, get_run, &r); }},
        {"Runs.ListSteps", Role::kViewer,
         [=](grpc::ClientContext* c) { v1::ListStepsResponse r; return runs->ListSteps(c, steps, &r); }},
        {"Runs.ExplainRun", Role::kViewer,
         [=](grpc::ClientContext* c) { v1::ExplainRunResponse r; return runs->ExplainRun(c, explain, &r); }},
    };
  }

  grpc::Status Invoke(const Call& call, const char* token) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    Authorize(ctx, token);
    return call.invoke(&ctx);
  }

  std::filesystem::path dir_;
  SystemClock clock_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(AuthTest, refuses_every_call_without_a_token_as_unauthenticated) {
  grpc::Status list = ListRuns(nullptr);
  EXPECT_EQ(list.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(list.error_message().find("viewer role"), std::string::npos) << list.error_message();
  EXPECT_EQ(SendStop(nullptr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Hello(nullptr, "mine").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListRuns("not-a-known-token-at-all").error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthTest, every_control_and_jobs_call_names_the_role_it_needs) {
  for (const Call& call : EveryCall()) {
    SCOPED_TRACE(call.name);
    grpc::Status none = Invoke(call, nullptr);
    EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED) << none.error_message();
    EXPECT_NE(none.error_message().find(std::string("needs the ") + RoleName(call.need) + " role"),
              std::string::npos)
        << none.error_message();
    grpc::Status viewer = Invoke(call, kViewer);
    if (call.need == Role::kOperator) {
      EXPECT_EQ(viewer.error_code(), grpc::StatusCode::PERMISSION_DENIED) << viewer.error_message();
    } else {
      // Past the token check: fine, or refused for a missing run or job.
      EXPECT_TRUE(viewer.ok() || viewer.error_code() == grpc::StatusCode::NOT_FOUND) << viewer.error_message();
    }
    grpc::Status reporter = Invoke(call, kReporter);
    EXPECT_EQ(reporter.error_code(), grpc::StatusCode::PERMISSION_DENIED) << reporter.error_message();
  }
}

TEST_F(AuthTest, lets_a_viewer_read_but_not_command) {
  EXPECT_TRUE(ListRuns(kViewer).ok());
  grpc::Status stop = SendStop(kViewer);
  EXPECT_EQ(stop.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(stop.error_message().find("needs the operator role"), std::string::npos) << stop.error_message();
  EXPECT_EQ(Hello(kViewer, "mine").error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthTest, scopes_a_reporter_token_to_its_own_run) {
  EXPECT_TRUE(Hello(kReporter, "mine").ok());
  grpc::Status other = Hello(kReporter, "someone-elses");
  EXPECT_EQ(other.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(other.error_message().find("for run mine"), std::string::npos) << other.error_message();
  EXPECT_EQ(ListRuns(kReporter).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(server_->hub().GetRun("someone-elses").has_value());
}

TEST_F(AuthTest, lets_an_operator_read_and_command) {
  EXPECT_TRUE(ListRuns(kOperator).ok());
  // No run "mine" exists: past the token check, the command is refused for that reason.
  grpc::Status stop = SendStop(kOperator);
  EXPECT_EQ(stop.error_code(), grpc::StatusCode::NOT_FOUND) << stop.error_message();
}

TEST(AuthFile, names_the_entry_that_is_wrong) {
  auto path = std::filesystem::temp_directory_path() / ("gradwatch-tokens-" + std::to_string(::getpid()) + ".json");
  std::ofstream(path) << R"({"tokens": [{"token": "operator-token-0123456789", "role": "admin"}]})";
  try {
    Auth::Load(path.string());
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("tokens[0].role: \"admin\""), std::string::npos) << e.what();
  }
  std::ofstream(path) << R"({"tokens": [{"token": "short", "role": "viewer"}]})";
  EXPECT_THROW(Auth::Load(path.string()), std::runtime_error);
  std::ofstream(path) << R"({"tokens": [{"token": "reporter-token-0123456789", "role": "reporter"}]})";
  EXPECT_THROW(Auth::Load(path.string()), std::runtime_error);  // a reporter needs its run_id
}

TEST(AuthFile, parses_each_role_and_a_reporters_run) {
  ParsedTokens parsed = ParseTokens(R"({"tokens": [
      {"token": "operator-token-0123456789", "role": "operator"},
      {"token": "viewer-token-0123456789", "role": "viewer", "run_id": "ignored"},
      {"token": "reporter-token-0123456789", "role": "reporter", "run_id": "mine"}]})");
  ASSERT_EQ(parsed.error, "");
  ASSERT_EQ(parsed.grants.size(), 3u);
  EXPECT_EQ(parsed.grants["operator-token-0123456789"].role, Role::kOperator);
  EXPECT_EQ(parsed.grants["viewer-token-0123456789"].role, Role::kViewer);
  EXPECT_EQ(parsed.grants["reporter-token-0123456789"].run_id, "mine");
}

TEST(AuthFile, names_what_is_wrong_instead_of_throwing) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "expected {\"tokens\": [{\"token\": ..., \"role\": ...}]}"},
      {R"({"tokens": []})", "tokens: the list is empty; it would turn authentication off"},
      {R"({"tokens": [7]})", "tokens[0]: expected an object {\"token\": ..., \"role\": ...}"},
      {R"({"tokens": [{"token": 12345678901234567890, "role": "viewer"}]})",
       "tokens[0].token: a string of 16 to 1024 characters is required"},
      {R"({"tokens": [{"token": "viewer token 0123456789", "role": "viewer"}]})",
       "tokens[0].token: only printable ASCII without spaces (it travels in a header)"},
      {R"({"tokens": [{"token": "viewer-token-0123456789", "role": 5}]})",
       "tokens[0].role: \"\" is not operator, viewer or reporter"},
      {R"({"tokens": [{"token": "reporter-token-0123456789", "role": "reporter", "run_id": 7}]})",
       "tokens[0].run_id: a reporter token is scoped to one run"},
      {R"({"tokens": [{"token": "viewer-token-0123456789", "role": "viewer"},
                      {"token": "viewer-token-0123456789", "role": "operator"}]})",
       "tokens[1].token: listed twice"},
  };
  for (const auto& [text, error] : cases) {
    ParsedTokens parsed = ParseTokens(text);
    EXPECT_EQ(parsed.error, error) << text;
    EXPECT_TRUE(parsed.grants.empty()) << text;
  }
}

TEST(AuthFile, load_names_the_file_and_the_reason) {
  auto path = std::filesystem::temp_directory_path() / ("gradwatch-tokens-load-" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  try {
    Auth::Load(path.string());
    FAIL() << "loaded a missing file";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "tokens file " + path.string() + ": cannot read: No such file or directory");
  }
  std::ofstream(path) << R"({"tokens": []})";
  try {
    Auth::Load(path.string());
    FAIL() << "an empty list turned authentication off";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "tokens file " + path.string() + ": tokens: the list is empty; it would turn authentication off");
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace gradwatch::monitor
