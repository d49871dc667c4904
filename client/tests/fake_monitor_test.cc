// Verbs against a fake monitor: an in-process Runs service on 127.0.0.1:0 that holds a
// few runs, their steps and events.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gradwatch/v1/runs.grpc.pb.h"
#include "run_cli.h"

namespace gradwatch::cli {
namespace {

class FakeRuns final : public v1::Runs::Service {
 public:
  std::vector<v1::Run> runs;
  std::map<std::string, std::vector<v1::StepReport>> steps;  // rank 0's
  std::map<std::string, std::map<uint32_t, std::vector<v1::StepReport>>> rank_steps;  // ranks >= 1
  std::map<std::string, std::vector<v1::Event>> events;

  grpc::Status GetRun(grpc::ServerContext*, const v1::GetRunRequest* req, v1::Run* resp) override {
    const v1::Run* run = Find(req->run_id());
    if (!run) return Unknown(req->run_id());
    *resp = *run;
    return grpc::Status::OK;
  }

  grpc::Status ListRuns(grpc::ServerContext*, const v1::ListRunsRequest*, v1::ListRunsResponse* resp) override {
    for (const auto& r : runs) *resp->add_runs() = r;
    return grpc::Status::OK;
  }
  grpc::Status ListSteps(grpc::ServerContext*, const v1::ListStepsRequest* req,
                         v1::ListStepsResponse* resp) override {
    if (!Find(req->run_id())) return Unknown(req->run_id());
    for (const auto& s : req->rank() == 0 ? steps[req->run_id()] : rank_steps[req->run_id()][req->rank()]) {
      if (s.step() > req->after_step() && resp->steps_size() < static_cast<int>(req->limit())) *resp->add_steps() = s;
    }
    return grpc::Status::OK;
  }
  grpc::Status ListEvals(grpc::ServerContext*, const v1::ListEvalsRequest* req, v1::ListEvalsResponse*) override {
    return Find(req->run_id()) ? grpc::Status::OK : Unknown(req->run_id());
  }
  grpc::Status ListEvents(grpc::ServerContext*, const v1::ListEventsRequest* req,
                          v1::ListEventsResponse* resp) override {
    if (!Find(req->run_id())) return Unknown(req->run_id());
    for (const auto& e : events[req->run_id()]) *resp->add_events() = e;
    return grpc::Status::OK;
  }
  // As gradwatchd does for a run that has ended: its state, then the end of the stream.
  grpc::Status WatchRun(grpc::ServerContext*, const v1::WatchRunRequest* req,
                        grpc::ServerWriter<v1::RunUpdate>* writer) override {
    const v1::Run* run = Find(req->run_id());
    if (!run) return Unknown(req->run_id());
    v1::RunUpdate update;
    *update.mutable_run() = *run;
    writer->Write(update);
    return grpc::Status::OK;
  }

 private:
  const v1::Run* Find(const std::string& id) const {
    for (const auto& r : runs) {
      if (r.run_id() == id) return &r;
    }
    return nullptr;
  }
  static grpc::Status Unknown(const std::string& id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no run " + id);
  }
};

class WithFakeMonitor : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&runs_);
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ && port_ > 0);
  }
  void TearDown() override { server_->Shutdown(); }

  CliResult Gradwatch(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", "127.0.0.1:" + std::to_string(port_), "--timeout-ms", "5000"});
    return Cli(args);
  }

  v1::Run& AddRun(const std::string& id, int64_t started, uint64_t steps) {
    v1::Run& r = runs_.runs.emplace_back();
    r.set_run_id(id);
    r.set_state(v1::RUN_STATE_FINISHED);
    r.set_started_unix_millis(started);
    r.set_steps(steps);
    r.set_last_step(steps);
    auto& stored = runs_.steps[id];
    for (uint64_t i = 1; i <= steps; ++i) {
      v1::StepReport& s = stored.emplace_back();
      s.set_step(i);
      s.set_loss(1.0 / static_cast<double>(i));
      s.set_grad_norm(0.5);
      s.set_learning_rate(0.01);
      s.set_jaccard_hard(0.75);
    }
    return r;
  }

  FakeRuns runs_;

 private:
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(WithFakeMonitor, export_of_an_unknown_run_fails_before_writing_anything) {
  AddRun("known", 1, 3);
  auto r = Gradwatch({"export", "nosuch"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "gradwatch: export: no run nosuch\n");
}

TEST_F(WithFakeMonitor, export_csv_numbers_read_back_exactly_and_enums_are_named) {
  AddRun("r", 1, 0);
  v1::StepReport& s = runs_.steps["r"].emplace_back();
  s.set_step(7);
  s.set_loss(0.1 + 0.2);
  s.set_learning_rate(0.01);
  s.set_grad_norm(2e-21);
  s.set_jaccard_soft(1.0 / 3.0);
  s.mutable_clipping()->set_kind(v1::Clipping::KIND_ADAPTIVE);
  s.mutable_clipping()->set_threshold(0.05);
  s.set_update_skipped(true);
  auto r = Gradwatch({"export", "r"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string header, row;
  std::getline(lines, header);
  std::getline(lines, row);
  EXPECT_EQ(header,
            "step,epoch,loss,lr,grad_norm,jaccard_soft,jaccard_hard,accuracy,clip_kind,clip_threshold,update_skipped");
  EXPECT_EQ(row, "7,0,0.30000000000000004,0.01,2e-21,0.3333333333333333,,,KIND_ADAPTIVE,0.05,true");
  EXPECT_EQ(std::strtod("0.30000000000000004", nullptr), 0.1 + 0.2);
  EXPECT_EQ(std::strtod("0.3333333333333333", nullptr), 1.0 / 3.0);
}

// Each scalar name of the run is a column (sorted, empty where a step lacks it), and each
// system metric a step reported; JSON Lines carries both as objects.
TEST_F(WithFakeMonitor, export_has_a_column_per_scalar_name_and_reported_system_metric) {
  AddRun("r", 1, 0);
  v1::StepReport& a = runs_.steps["r"].emplace_back();
  a.set_step(1);
  (*a.mutable_scalars())["zeta"] = 0.1 + 0.2;
  a.mutable_system()->set_data_seconds(0.25);
  a.mutable_system()->set_resident_bytes(123456789);
  v1::StepReport& b = runs_.steps["r"].emplace_back();
  b.set_step(2);
  (*b.mutable_scalars())["alpha"] = -1.5;
  (*b.mutable_scalars())["zeta"] = 2e-21;
  b.mutable_system()->set_device_utilization(0.5);
  auto r = Gradwatch({"export", "r"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "step,epoch,loss,lr,grad_norm,jaccard_soft,jaccard_hard,accuracy,clip_kind,clip_threshold,update_skipped,"
            "data_seconds,resident_bytes,device_utilization,scalar.alpha,scalar.zeta\n"
            "1,0,0,0,0,,,,KIND_OFF,0,false,0.25,123456789,,,0.30000000000000004\n"
            "2,0,0,0,0,,,,KIND_OFF,0,false,,,0.5,-1.5,2e-21\n");
  auto j = Gradwatch({"export", "r", "--format", "jsonl"});
  ASSERT_EQ(j.code, 0) << j.err;
  std::istringstream lines(j.out);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_NE(first.find("\"scalars\":{\"zeta\":0.30000000000000004}"), std::string::npos) << first;
  EXPECT_NE(first.find("\"system\":{\"data_seconds\":0.25,\"resident_bytes\":123456789}"), std::string::npos)
      << first;
  EXPECT_NE(second.find("\"scalars\":{\"alpha\":-1.5,\"zeta\":2e-21}"), std::string::npos) << second;
}

TEST_F(WithFakeMonitor, export_pages_through_every_step) {
  AddRun("long", 1, 12'000);  // more than two pages of 5,000
  auto r = Gradwatch({"export", "long", "--format", "jsonl"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line, last;
  int count = 0;
  while (std::getline(lines, line)) ++count, last = line;
  EXPECT_EQ(count, 12'000);
  EXPECT_EQ(nlohmann::json::parse(last)["step"], 12'000);
}

// A data-parallel run's export has every rank's own steps, rank 0's first, with a rank
// column and each rank's local gradient norm.
TEST_F(WithFakeMonitor, export_of_a_data_parallel_run_has_a_rank_column_and_every_ranks_steps) {
  v1::Run& run = AddRun("dp", 1, 2);
  run.set_world_size(2);
  runs_.steps["dp"][0].set_local_grad_norm(0.25);
  for (uint64_t i = 1; i <= 2; ++i) {
    v1::StepReport& s = runs_.rank_steps["dp"][1].emplace_back();
    s.set_step(i);
    s.set_loss(2.0);
    s.set_local_grad_norm(500.0 * i);
  }
  auto r = Gradwatch({"export", "dp"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string header, row;
  std::getline(lines, header);
  EXPECT_EQ(header.rfind("step,rank,epoch,loss,", 0), 0u) << header;
  EXPECT_NE(header.find(",local_grad_norm"), std::string::npos) << header;
  std::vector<std::string> rows;
  while (std::getline(lines, row)) rows.push_back(row);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].rfind("1,0,0,1,", 0), 0u) << rows[0];
  EXPECT_EQ(rows[0].substr(rows[0].rfind(',') + 1), "0.25");
  EXPECT_EQ(rows[3].rfind("2,1,0,2,", 0), 0u) << rows[3];
  EXPECT_EQ(rows[3].substr(rows[3].rfind(',') + 1), "1000");
  auto j = Gradwatch({"export", "dp", "--format", "jsonl"});
  ASSERT_EQ(j.code, 0) << j.err;
  EXPECT_NE(j.out.find("\"rank\":1"), std::string::npos);
}

TEST_F(WithFakeMonitor, runs_are_listed_newest_first) {
  AddRun("oldest", 1'000, 1);
  AddRun("newest", 3'000, 1);
  AddRun("middle", 2'000, 1);
  auto r = Gradwatch({"--json", "runs"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream lines(r.out);
  std::vector<std::string> order;
  for (std::string line; std::getline(lines, line);) order.push_back(nlohmann::json::parse(line)["run_id"]);
  EXPECT_EQ(order, (std::vector<std::string>{"newest", "middle", "oldest"}));
}

TEST_F(WithFakeMonitor, watch_of_a_finished_run_shows_its_last_step_and_its_events) {
  AddRun("done", 1, 120);
  v1::Event& e = runs_.events["done"].emplace_back();
  e.set_step(60);
  e.set_kind("grad_spike");
  e.set_severity(v1::SEVERITY_CRITICAL);
  e.set_message("grad norm 226 is 31.2σ above its level");
  auto r = Gradwatch({"watch", "done"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "run done finished\n"
            "step 60  critical grad_spike: grad norm 226 is 31.2σ above its level\n"
            "step 120  loss 0.008333  jaccard 0.75  grad_norm 0.5  lr 0.01  clipping off\n");
  EXPECT_EQ(r.err, "gradwatch: run done ended: finished\n");
}

TEST_F(WithFakeMonitor, watch_of_an_unknown_run_fails) {
  auto r = Gradwatch({"watch", "nosuch"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "gradwatch: watch: no run nosuch\n");
}

}  // namespace
}  // namespace gradwatch::cli
