// Access control end to end: the whole monitor with a tokens file, called over gRPC with
// no token, a viewer token, an operator token and reporter tokens.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "auth.h"
#include "gradwatch/monitor/server.h"
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

}  // namespace
}  // namespace gradwatch::monitor
