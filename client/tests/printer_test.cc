// The text and JSON printers, given protobuf records as the monitor sends them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "printer.h"

namespace gradwatch::cli {
namespace {

using nlohmann::json;

class Printers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("TZ", "UTC", 1);  // start times in the tables, local time
    tzset();
  }
  Printer& text() { return *text_; }
  Printer& jsonl() { return *json_; }
  std::string text_out() const { return text_out_.str(); }
  // The JSON printer's output, one object per line.
  std::vector<json> json_out() const {
    std::vector<json> out;
    std::istringstream lines(json_out_.str());
    for (std::string line; std::getline(lines, line);) out.push_back(json::parse(line));
    return out;
  }

  static v1::Run MakeRun(const std::string& id, int64_t started) {
    v1::Run r;
    r.set_run_id(id);
    r.set_state(v1::RUN_STATE_FINISHED);
    r.set_mode(v1::MODE_GUARD);
    r.set_started_unix_millis(started);
    r.set_steps(40);
    r.set_last_step(40);
    r.set_last_loss(0.123456);
    r.set_last_grad_norm(2.5);
    r.set_events(2);
    r.mutable_config()->set_total_steps(40);
    (*r.mutable_config()->mutable_thresholds())["spike_z_critical"] = 6;
    return r;
  }

 private:
  std::ostringstream text_out_, json_out_;
  std::unique_ptr<Printer> text_ = MakePrinter(false, text_out_), json_ = MakePrinter(true, json_out_);
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST_F(Printers, a_run_in_text_is_a_block_of_named_fields) {
  v1::Run r = MakeRun("r1", 1'700'000'000'000);
  text().Run("r1", &r, nullptr);
  for (const char* line : {"run        r1\n", "state      finished\n", "mode       guard\n",
                           "started    2023-11-14 22:13\n", "steps      40 (last 40 of 40)\n", "loss       0.1235\n",
                           "thresholds spike_z_critical=6\n", "policy     defaults\n"}) {
    EXPECT_NE(text_out().find(line), std::string::npos) << line << text_out();
  }
}

TEST_F(Printers, a_run_with_its_job_in_json_is_one_object_with_the_job_inside) {
  v1::Run r = MakeRun("r1", 5);
  v1::Job job;
  job.set_job_id("r1");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  jsonl().Run("r1", &r, &job);
  auto out = json_out();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["run_id"], "r1");
  EXPECT_EQ(out[0]["state"], "finished");
  EXPECT_EQ(out[0]["started_unix_millis"], 5);
  EXPECT_EQ(out[0]["thresholds"]["spike_z_critical"], 6);
  EXPECT_EQ(out[0]["job"]["state"], "succeeded");
}

TEST_F(Printers, a_job_alone_in_text_shows_its_state_and_error) {
  v1::Job job;
  job.set_job_id("j1");
  job.set_state(v1::JOB_STATE_FAILED);
  job.set_exit_code(1);
  job.set_error("gradwatch-train: bad data");
  text().Run("j1", nullptr, &job);
  EXPECT_EQ(text_out(), "run        j1\njob        failed (exit code 1)\nerror      gradwatch-train: bad data\n");
}

TEST_F(Printers, the_runs_table_sizes_its_first_column_to_the_longest_id) {
  std::string long_id(40, 'x');
  text().Runs({MakeRun(long_id, 2'000), MakeRun("a", 0)});
  auto lines = Lines(text_out());
  ASSERT_EQ(lines.size(), 3u);
  size_t started = lines[0].find("STARTED");
  EXPECT_EQ(started, long_id.size() + 2);
  EXPECT_EQ(lines[1].substr(0, long_id.size() + 2), long_id + "  ");
  EXPECT_EQ(lines[1].substr(started, 16), "1970-01-01 00:00");
  EXPECT_EQ(lines[2].substr(started, 2), "- ");  // not known
  EXPECT_EQ(lines[1].find("finished"), lines[0].find("STATE"));
}

TEST_F(Printers, runs_in_json_are_one_object_per_run_in_the_order_given) {
  jsonl().Runs({MakeRun("b", 2), MakeRun("a", 1)});
  auto out = json_out();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["run_id"], "b");
  EXPECT_EQ(out[1]["run_id"], "a");
  EXPECT_EQ(out[1]["mode"], "guard");
}

Repeated<v1::Event> TwoEvents() {
  Repeated<v1::Event> events;
  v1::Event* e = events.Add();
  e->set_step(350);
  e->set_kind("grad_spike");
  e->set_severity(v1::SEVERITY_CRITICAL);
  e->set_message("grad norm 226 is 31.2σ above its level");
  e->set_value(31.2);
  e->set_first_layer("enc1.conv1.weight");
  e->set_incident_id(1);
  e = events.Add();
  e->set_step(400);
  e->set_kind("collapse");
  e->set_severity(v1::SEVERITY_WARNING);
  e->set_message("loss pinned at 1");
  e->set_value(std::nan(""));
  return events;
}

TEST_F(Printers, events_in_text_are_one_line_each) {
  text().Events(TwoEvents());
  EXPECT_EQ(text_out(),
            "step 350  critical  grad_spike  grad norm 226 is 31.2σ above its level\n"
            "step 400  warning  collapse  loss pinned at 1\n");
}

TEST_F(Printers, events_in_json_carry_severity_by_name_and_nan_as_null) {
  jsonl().Events(TwoEvents());
  auto out = json_out();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["severity"], "critical");
  EXPECT_EQ(out[0]["first_layer"], "enc1.conv1.weight");
  EXPECT_EQ(out[0]["incident"], 1);
  EXPECT_TRUE(out[1]["value"].is_null());
}

v1::CommandRecord Clip() {
  v1::CommandRecord r;
  r.mutable_command()->set_id("c-000001");
  r.mutable_command()->mutable_set_clipping()->set_kind(v1::Clipping::KIND_NORM);
  r.mutable_command()->set_issued_by("operator:ana");
  r.mutable_command()->set_reason("gradwatch clip");
  r.set_issued_at_step(10);
  r.mutable_ack()->set_applied_at_step(11);
  r.mutable_ack()->set_result(v1::CommandAck::RESULT_APPLIED);
  r.mutable_effect()->set_loss_before(0.5);
  r.mutable_effect()->set_loss_after(0.25);
  return r;
}

TEST_F(Printers, commands_in_text_show_action_issuer_step_and_effect) {
  Repeated<v1::CommandRecord> commands;
  *commands.Add() = Clip();
  text().Commands(commands);
  EXPECT_EQ(text_out(),
            "c-000001  set_clipping  by operator:ana  step 10 -> applied at 11  loss 0.5 -> 0.25, grad norm 0 -> 0"
            "  (gradwatch clip)\n");
}

TEST_F(Printers, commands_in_json_name_the_action_and_the_acknowledgement) {
  Repeated<v1::CommandRecord> commands;
  *commands.Add() = Clip();
  jsonl().Commands(commands);
  auto out = json_out();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["action"], "set_clipping");
  EXPECT_EQ(out[0]["acknowledged"], true);
  EXPECT_EQ(out[0]["applied_at_step"], 11);
  EXPECT_EQ(out[0]["loss_after"], 0.25);
}

TEST_F(Printers, a_command_outcome_in_text_appears_only_when_applied) {
  v1::SendCommandResponse applied;
  *applied.mutable_record() = Clip();
  applied.set_acknowledged(true);
  v1::SendCommandResponse unanswered = applied;
  unanswered.set_acknowledged(false);
  text().CommandOutcome(unanswered);
  text().CommandOutcome(applied);
  EXPECT_EQ(text_out(), "c-000001 applied at step 11\n");
  jsonl().CommandOutcome(unanswered);
  auto out = json_out();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["acknowledged"], false);
}

Repeated<v1::Job> Jobs() {
  Repeated<v1::Job> jobs;
  v1::Job* j = jobs.Add();
  j->set_job_id("a-rather-long-job-identifier-for-the-table");
  j->set_state(v1::JOB_STATE_STOPPED);
  j->set_exit_code(143);
  j = jobs.Add();
  j->set_job_id("short");
  j->set_state(v1::JOB_STATE_QUEUED);
  j->set_launcher("slurm");
  j->set_scheduler_job_id("1234");
  j->set_scheduler_state("PENDING (Resources)");
  return jobs;
}

TEST_F(Printers, jobs_in_text_are_a_table_that_fits_the_longest_id) {
  text().Jobs(Jobs());
  auto lines = Lines(text_out());
  ASSERT_EQ(lines.size(), 3u);
  size_t state = lines[0].find("STATE");
  EXPECT_EQ(state, std::string("a-rather-long-job-identifier-for-the-table").size() + 2);
  EXPECT_EQ(lines[1].substr(state, 7), "stopped");
  EXPECT_EQ(lines[1].substr(lines[0].find("EXIT"), 3), "143");
  EXPECT_EQ(lines[2].substr(lines[0].find("EXIT"), 1), "-");  // still waiting
  EXPECT_EQ(lines[1].substr(lines[0].find("LAUNCHER"), 5), "local");
  EXPECT_EQ(lines[2].substr(lines[0].find("LAUNCHER"), 14), "slurm job 1234");
  EXPECT_EQ(lines[2].substr(lines[0].find("DETAIL")), "PENDING (Resources)");
}

TEST_F(Printers, a_slurm_job_in_text_shows_its_launcher_job_id_and_slurms_state) {
  v1::Job job;
  job.set_job_id("j1");
  job.set_state(v1::JOB_STATE_FAILED);
  job.set_exit_code(1);
  job.set_launcher("slurm");
  job.set_scheduler_job_id("77");
  job.set_scheduler_state("FAILED (NonZeroExitCode)");
  job.set_error("gradwatch-train: bad data (exit code 1; Slurm: FAILED (NonZeroExitCode))");
  text().Run("j1", nullptr, &job);
  EXPECT_EQ(text_out(), "run        j1\njob        failed (exit code 1)\nlauncher   slurm job 77\n"
                        "scheduler  FAILED (NonZeroExitCode)\n"
                        "error      gradwatch-train: bad data (exit code 1; Slurm: FAILED (NonZeroExitCode))\n");
  jsonl().Run("j1", nullptr, &job);
  auto out = json_out();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["job"]["launcher"], "slurm");
  EXPECT_EQ(out[0]["job"]["scheduler_job_id"], "77");
  EXPECT_EQ(out[0]["job"]["scheduler_state"], "FAILED (NonZeroExitCode)");
}

TEST_F(Printers, jobs_in_json_are_one_object_each) {
  jsonl().Jobs(Jobs());
  auto out = json_out();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["state"], "stopped");
  EXPECT_EQ(out[0]["exit_code"], 143);
  EXPECT_EQ(out[1]["job_id"], "short");
}

TEST_F(Printers, a_launch_prints_the_run_id_in_text_and_the_job_once_in_json) {
  v1::Job job;
  job.set_job_id("j");
  job.set_run_id("j");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  text().Launched(job, false);
  text().LaunchEnded(job);
  EXPECT_EQ(text_out(), "j\n");
  jsonl().Launched(job, false);
  jsonl().LaunchEnded(job);
  EXPECT_EQ(json_out().size(), 1u);
}

TEST_F(Printers, replay_totals_are_words_in_text_and_absent_from_json) {
  text().ReplayTotals(12, "rows", 0);
  text().ReplayTotals(5, "steps", 1);
  EXPECT_EQ(text_out(), "12 rows, 0 events\n5 steps, 1 event\n");
  jsonl().ReplayTotals(12, "rows", 0);
  EXPECT_TRUE(json_out().empty());
}

TEST_F(Printers, an_explanation_is_plain_text_or_one_object) {
  text().Explanation("r1", "All healthy.\n");
  EXPECT_EQ(text_out(), "All healthy.\n");
  jsonl().Explanation("r1", "All healthy.\n");
  EXPECT_EQ(json_out().at(0)["text"], "All healthy.\n");
}

TEST_F(Printers, a_policy_change_shows_thresholds_and_policy) {
  v1::Run r = MakeRun("r1", 0);
  (*r.mutable_config()->mutable_policy())["lr_scale"] = 0.5;
  text().Policy(r);
  EXPECT_EQ(text_out(), "run        r1\nthresholds spike_z_critical=6\npolicy     lr_scale=0.5\n");
  jsonl().Policy(r);
  EXPECT_EQ(json_out().at(0)["policy"]["lr_scale"], 0.5);
}

}  // namespace
}  // namespace gradwatch::cli
