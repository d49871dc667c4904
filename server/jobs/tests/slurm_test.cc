// The Slurm launcher against a scripted sbatch/scontrol/scancel (no Slurm here; the e2e test
// slurm_test.py runs a real one): the script and sbatch's argv, what a launch config cannot
// inject, scontrol's answers mapped onto job states, stop, adoption.
#include "gradwatch/jobs/slurm.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gradwatch/jobs/launch_config.h"
#include "jobs_fixture.h"
#include "train/config.h"

namespace gradwatch::jobs {
namespace {

namespace fs = std::filesystem;
using fakes::JobsTest;

std::string Scontrol(const std::string& state, const std::string& reason, const std::string& exit = "0:0") {
  return "JobId=42 JobName=gradwatch-r1 UserId=me(1000) JobState=" + state + " Reason=" + reason +
         " Dependency=(null) ExitCode=" + exit + " Command=/data/my jobs/job.sbatch WorkDir=/x\n";
}

// sbatch, scontrol and scancel as a test scripts them; every call kept.
struct FakeSlurm {
  std::vector<std::vector<std::string>> calls;
  std::vector<std::vector<std::string>> envs;
  CommandResult sbatch{0, "42\n", ""};
  CommandResult scontrol{0, Scontrol("PENDING", "Resources"), ""};

  CommandRunner Runner() {
    return [this](const std::vector<std::string>& argv, const std::vector<std::string>& env) {
      calls.push_back(argv);
      envs.push_back(env);
      if (argv[0] == "sbatch") return sbatch;
      if (argv[0] == "scontrol") return scontrol;
      return CommandResult{0, "", ""};
    };
  }
  std::vector<std::vector<std::string>> CallsOf(const std::string& program) const {
    std::vector<std::vector<std::string>> out;
    for (const auto& c : calls) {
      if (c[0] == program) out.push_back(c);
    }
    return out;
  }
};

SlurmOptions TestOptions() {
  SlurmOptions o;
  o.poll_thread = false;
  return o;
}

LaunchSpec Spec() {
  LaunchSpec s;
  s.program = "/opt/gradwatch/bin/gradwatch-train";
  s.args = {"--config", "/var/lib/gradwatch/jobs/r1/config.json"};
  s.workdir = "/var/lib/gradwatch/jobs/r1/out";
  s.log_path = "/var/lib/gradwatch/jobs/r1/train.log";
  s.job_dir = "/var/lib/gradwatch/jobs/r1";
  s.name = "r1";
  return s;
}

TEST(SlurmScript, runs_the_trainer_through_srun_with_no_sbatch_lines) {
  std::string script = JobScript(Spec());
  EXPECT_EQ(script.rfind("#!/bin/sh\n", 0), 0u);
  EXPECT_NE(script.find("\nexec srun --kill-on-bad-exit=1 '/opt/gradwatch/bin/gradwatch-train' '--config' "
                        "'/var/lib/gradwatch/jobs/r1/config.json'\n"),
            std::string::npos)
      << script;
  EXPECT_EQ(script.find("#SBATCH"), std::string::npos);
}

TEST(SlurmScript, quotes_for_sh_and_refuses_control_characters) {
  EXPECT_EQ(ShellQuote("it's $(x) `y`"), "'it'\\''s $(x) `y`'");
  EXPECT_THROW(ShellQuote("a\nb"), std::invalid_argument);
  LaunchSpec s = Spec();
  s.program = "/opt/x\n#SBATCH --wrap=evil";
  EXPECT_THROW(JobScript(s), std::invalid_argument);
}

TEST(SlurmScript, sbatch_argv_asks_for_n_ranks_and_the_operators_options) {
  LaunchSpec s = Spec();
  s.resources.set_nodes(2);
  s.resources.set_tasks_per_node(4);
  s.resources.set_gpus_per_task(1);
  s.resources.set_cpus_per_task(8);
  s.resources.set_memory_mb(16000);
  SlurmOptions o;
  o.partition = "gpu";
  o.account = "ml-team";
  o.time = "2:00:00";
  o.options = {"--qos=high", "--exclusive"};
  EXPECT_EQ(SbatchArgv(s, o, "/j/job.sbatch"),
            (std::vector<std::string>{"sbatch", "--parsable", "--export=ALL", "--job-name=gradwatch-r1",
                                      "--output=/var/lib/gradwatch/jobs/r1/train.log", "--open-mode=append",
                                      "--chdir=/var/lib/gradwatch/jobs/r1/out", "--nodes=2", "--ntasks-per-node=4",
                                      "--gpus-per-task=1", "--cpus-per-task=8", "--mem=64000M", "--partition=gpu",
                                      "--account=ml-team", "--time=2:00:00", "--qos=high", "--exclusive",
                                      "/j/job.sbatch"}));
}

TEST(SlurmOptionsCheck, refuses_what_is_no_plain_sbatch_option) {
  SlurmOptions o;
  o.partition = "gpu\n#SBATCH";
  o.account = "a b";
  o.time = "$(reboot)";
  o.options = {"-p debug", "--comment=a\nb", "--output=/etc/passwd", "--wrap=sh", "--qos=ok", "--"};
  std::string problems = CheckSlurmOptions(o);
  for (const char* said : {"--slurm-partition", "--slurm-account", "--slurm-time", "\"-p debug\"",
                           "control character", "--output: set by the launcher", "--wrap: set by the launcher",
                           "\"--\": must be"}) {
    EXPECT_NE(problems.find(said), std::string::npos) << said << " in " << problems;
  }
  EXPECT_EQ(problems.find("--qos"), std::string::npos) << problems;
  EXPECT_EQ(CheckSlurmOptions(SlurmOptions{"gpu", "acct", "1-0", {"--qos=high"}}), "");
}

TEST(SlurmParse, reads_state_reason_and_exit_code_from_scontrol) {
  auto pending = ParseScontrolJob(Scontrol("PENDING", "Resources"));
  ASSERT_TRUE(pending);
  EXPECT_TRUE(pending->pending());
  EXPECT_FALSE(pending->ended());
  EXPECT_EQ(pending->Describe(), "PENDING (Resources)");
  auto running = ParseScontrolJob(Scontrol("RUNNING", "None"));
  EXPECT_EQ(running->Describe(), "RUNNING");
  EXPECT_FALSE(running->pending() || running->ended());
  auto failed = ParseScontrolJob(Scontrol("FAILED", "NonZeroExitCode", "1:0"));
  EXPECT_TRUE(failed->ended());
  EXPECT_EQ(failed->exit_code, 1);
  auto timeout = ParseScontrolJob(Scontrol("TIMEOUT", "TimeLimit", "0:15"));
  EXPECT_EQ(timeout->exit_signal, 15);
  EXPECT_EQ(timeout->Describe(), "TIMEOUT (TimeLimit)");
  EXPECT_FALSE(ParseScontrolJob("slurm_load_jobs error: Invalid job id specified"));
  EXPECT_FALSE(ParseScontrolJob("JobState=$(x) Reason=y"));
  EXPECT_EQ(ParseSbatchJobId("1234\n"), "1234");
  EXPECT_EQ(ParseSbatchJobId("1234;cluster\n"), "1234");
  EXPECT_EQ(ParseSbatchJobId("Submitted batch job 5\n"), "");
  EXPECT_EQ(ParseSbatchJobId(""), "");
}

class SlurmJobsTest : public JobsTest {
 protected:
  // scontrol answers `out` from now on; the launcher asks it and the jobs hear of it.
  void Answer(Jobs& jobs, const std::string& out) {
    slurm_.scontrol.out = out;
    launcher_.Refresh();
    jobs.Tick();
  }

  FakeSlurm slurm_;
  SlurmLauncher launcher_{TestOptions(), slurm_.Runner()};
};

TEST_F(SlurmJobsTest, a_job_waits_runs_and_succeeds_as_slurm_says) {
  JobsOptions o = Options();
  o.env = {"PATH=/usr/bin", "SLURM_CONF=/tmp/test/slurm.conf"};
  o.reporter_tokens = true;
  Jobs jobs(o, launcher_);
  v1::Job job = jobs.Launch(R"({"steps": 40, "resources": {"gpus_per_task": 1}})", "r1");
  EXPECT_EQ(job.launcher(), "slurm");
  EXPECT_EQ(job.scheduler_job_id(), "42");
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);  // nothing heard from Slurm yet
  EXPECT_EQ(job.pid(), 0);
  EXPECT_EQ(job.resources().gpus_per_task(), 1u);

  auto sbatch = slurm_.CallsOf("sbatch");
  ASSERT_EQ(sbatch.size(), 1u);
  EXPECT_EQ(sbatch[0].back(), (dir_ / "r1" / "job.sbatch").string());
  EXPECT_NE(std::find(sbatch[0].begin(), sbatch[0].end(), "--gpus-per-task=1"), sbatch[0].end());
  const auto& env = slurm_.envs[0];  // the token travels in sbatch's environment, not its argv
  EXPECT_NE(std::find(env.begin(), env.end(), "SLURM_CONF=/tmp/test/slurm.conf"), env.end());
  auto token = std::find_if(env.begin(), env.end(), [](const std::string& e) { return e.rfind("GRADWATCH_TOKEN=", 0) == 0; });
  ASSERT_NE(token, env.end());
  for (const auto& arg : sbatch[0]) EXPECT_EQ(arg.find(token->substr(16)), std::string::npos) << arg;
  EXPECT_EQ(fs::status(dir_ / "r1" / "job.sbatch").permissions() & fs::perms::others_all, fs::perms::none);

  launcher_.Refresh();
  jobs.Tick();
  job = *jobs.Get("r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.scheduler_state(), "PENDING (Resources)");

  Answer(jobs, Scontrol("RUNNING", "None"));
  EXPECT_EQ(jobs.Get("r1")->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(jobs.Get("r1")->scheduler_state(), "RUNNING");

  Answer(jobs, Scontrol("COMPLETED", "None"));
  job = *jobs.Get("r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.exit_code(), 0);
  EXPECT_EQ(job.scheduler_state(), "COMPLETED");
}

TEST_F(SlurmJobsTest, a_job_slurm_fails_ends_failed_with_slurms_reason) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  Log("r1", "gradwatch-train: step 3: loss is not finite\n");
  Answer(jobs, Scontrol("FAILED", "NonZeroExitCode", "1:0"));
  v1::Job job = *jobs.Get("r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error(), "gradwatch-train: step 3: loss is not finite (exit code 1; Slurm: FAILED (NonZeroExitCode))");

  jobs.Launch("{}", "r2");
  Answer(jobs, Scontrol("TIMEOUT", "TimeLimit", "0:0"));
  job = *jobs.Get("r2");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);  // exit code 0, but Slurm ended it
  EXPECT_EQ(job.error(), "exit code 0; Slurm: TIMEOUT (TimeLimit)");
}

TEST_F(SlurmJobsTest, a_job_sbatch_refuses_fails_with_sbatchs_words) {
  slurm_.sbatch = {1, "", "sbatch: error: Invalid generic resource (gres) specification\n"};
  Jobs jobs(Options(), launcher_);
  v1::Job job = jobs.Launch(R"({"resources": {"gpus_per_task": 2}})", "r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error(), "Slurm refused the job (sbatch exit code 1): sbatch: error: Invalid generic resource (gres) "
                         "specification");
}

TEST_F(SlurmJobsTest, stop_signals_the_ranks_then_kills_after_the_grace) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  Answer(jobs, Scontrol("RUNNING", "None"));
  jobs.Stop("r1", 3000);
  EXPECT_TRUE(slurm_.CallsOf("scancel").empty());  // queued for the launcher's thread, not run by Stop
  launcher_.Refresh();
  EXPECT_EQ(slurm_.CallsOf("scancel").back(), (std::vector<std::string>{"scancel", "--signal=TERM", "42"}));
  now_ += 2999;
  jobs.Tick();
  launcher_.Refresh();
  EXPECT_EQ(slurm_.CallsOf("scancel").size(), 1u);
  now_ += 1;
  jobs.Tick();
  launcher_.Refresh();
  EXPECT_EQ(slurm_.CallsOf("scancel").back(), (std::vector<std::string>{"scancel", "--full", "--signal=KILL", "42"}));
  Answer(jobs, Scontrol("FAILED", "NonZeroExitCode", "137:0"));
  EXPECT_EQ(jobs.Get("r1")->state(), v1::JOB_STATE_STOPPED);
}

TEST_F(SlurmJobsTest, a_pending_job_is_cancelled_outright) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  launcher_.Refresh();
  jobs.Tick();
  jobs.Stop("r1", 0);
  launcher_.Refresh();
  EXPECT_EQ(slurm_.CallsOf("scancel").back(), (std::vector<std::string>{"scancel", "42"}));
  Answer(jobs, Scontrol("CANCELLED", "None", "0:0"));
  EXPECT_EQ(jobs.Get("r1")->state(), v1::JOB_STATE_STOPPED);
}

TEST_F(SlurmJobsTest, a_restarted_monitor_adopts_its_slurm_jobs_by_id) {
  {
    Jobs jobs(Options(), launcher_);
    jobs.Launch("{}", "r1");
    Answer(jobs, Scontrol("RUNNING", "None"));
  }
  FakeSlurm later;
  later.scontrol.out = Scontrol("RUNNING", "None");
  SlurmLauncher again(TestOptions(), later.Runner());
  Jobs jobs(Options(), again);
  EXPECT_EQ(later.CallsOf("scontrol").at(0), (std::vector<std::string>{"scontrol", "show", "job", "--oneliner", "42"}));
  EXPECT_EQ(jobs.Get("r1")->state(), v1::JOB_STATE_RUNNING);
  later.scontrol.out = Scontrol("COMPLETED", "None");
  again.Refresh();
  jobs.Tick();
  EXPECT_EQ(jobs.Get("r1")->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(jobs.Get("r1")->exit_code(), 0);  // Slurm still knew how it ended
}

TEST_F(SlurmJobsTest, a_job_slurm_forgot_is_judged_by_what_it_left) {
  {
    Jobs jobs(Options(), launcher_);
    jobs.Launch("{}", "r1");
  }
  FakeSlurm later;
  later.scontrol = {1, "", "slurm_load_jobs error: Invalid job id specified\n"};
  SlurmLauncher again(TestOptions(), later.Runner());
  std::ofstream(dir_ / "r1" / "summary.json") << "{}";
  Jobs jobs(Options(), again);
  EXPECT_EQ(jobs.Get("r1")->state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(SlurmJobsTest, an_unreachable_controller_keeps_the_job_and_says_so) {
  Jobs jobs(Options(), launcher_);
  jobs.Launch("{}", "r1");
  Answer(jobs, Scontrol("RUNNING", "None"));
  slurm_.scontrol = {1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"};
  launcher_.Refresh();
  jobs.Tick();
  v1::Job job = *jobs.Get("r1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.scheduler_state(),
            "RUNNING; Slurm cannot be asked: slurm_load_jobs error: Unable to contact slurm controller (connect failure)");
}

// Every string a launch config can hold, and the run id, tried with what would break out of
// a script line or an sbatch option: each is refused, or reaches neither the script nor
// sbatch's argv (it lives in config.json only, which the trainer reads as JSON).
TEST_F(SlurmJobsTest, a_launch_config_cannot_inject_script_lines_options_or_environment) {
  const std::vector<std::string> payloads = {
      "x\n#SBATCH --wrap=touch /tmp/pwned", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a'b\"c",
      "--export=EVIL=1",  "x;touch /tmp/pwned", "\r\n#SBATCH -o /etc/x"};
  const auto fields = nlohmann::json::parse(train::ToJson(train::TrainConfig{}));
  std::vector<std::string> string_fields;
  for (const auto& [key, value] : fields.items()) {
    if (value.is_string()) string_fields.push_back(key);
  }
  for (const auto& [key, value] : fields["data"].items()) {
    if (value.is_string()) string_fields.push_back("data." + key);
  }
  string_fields.push_back("faults.kind");
  ASSERT_GE(string_fields.size(), 8u);
  JobsOptions o = Options(1000);
  o.datasets_dir = (dir_ / "datasets").string();
  Jobs jobs(o, launcher_);
  int n = 0, refused = 0;
  for (const auto& field : string_fields) {
    for (const auto& payload : payloads) {
      nlohmann::json config = nlohmann::json::object();
      if (field == "faults.kind") {
        config["faults"] = {{{"kind", payload}, {"step", 1}}};
      } else if (field.rfind("data.", 0) == 0) {
        config["data"][field.substr(5)] = payload;
      } else {
        config[field] = payload;
      }
      const std::string id = "inj" + std::to_string(n++);
      size_t calls = slurm_.calls.size();
      try {
        jobs.Launch(config.dump(), field == "run_id" ? "" : id);
      } catch (const InvalidLaunch&) {
        ++refused;
        EXPECT_EQ(slurm_.calls.size(), calls) << field;  // refused before sbatch
        continue;
      }
      std::string script;
      std::ifstream in(dir_ / id / "job.sbatch");
      std::stringstream text;
      text << in.rdbuf();
      script = text.str();
      EXPECT_EQ(script.find(payload), std::string::npos) << field << " reached the script:\n" << script;
      EXPECT_EQ(std::count(script.begin(), script.end(), '\n'), 4) << script;
      for (const auto& arg : slurm_.calls.back()) {
        EXPECT_EQ(arg.find(payload), std::string::npos) << field << " reached sbatch's argv: " << arg;
      }
      for (const auto& e : slurm_.envs.back()) {
        EXPECT_EQ(e.find(payload), std::string::npos) << field << " reached the environment: " << e;
      }
    }
  }
  EXPECT_GT(refused, 0);
  for (const std::string bad : {R"({"resources": {"nodes": "1\n#SBATCH --wrap=x"}})",
                                R"({"resources": {"partition": "evil"}})", R"({"resources": {"nodes": 1.5}})",
                                R"({"resources": {"nodes": 0}})", R"({"resources": "--nodes=9"})"}) {
    EXPECT_THROW(jobs.Launch(bad, "res" + std::to_string(n++)), InvalidLaunch) << bad;
  }
}

TEST(LaunchResources, fills_defaults_and_bounds_each_field) {
  LaunchContext ctx{"/j", "127.0.0.1:1", "", 0, 8, 4};
  v1::JobResources r = LaunchResources("{}", ctx);
  EXPECT_EQ(r.nodes(), 1u);
  EXPECT_EQ(r.tasks_per_node(), 1u);
  EXPECT_EQ(r.gpus_per_task(), 0u);
  r = LaunchResources(R"({"resources": {"nodes": 2, "tasks_per_node": 4, "memory_mb": 512}})", ctx);
  EXPECT_EQ(r.nodes() * r.tasks_per_node(), 8u);
  EXPECT_EQ(r.memory_mb(), 512u);
  try {
    LaunchResources(R"({"resources": {"gpus_per_task": 17}})", ctx);
    FAIL();
  } catch (const InvalidLaunch& e) {
    EXPECT_EQ(std::string(e.what()), "resources.gpus_per_task: must be 0..16, got 17");
  }
  ctx.max_ranks = 1;
  try {
    LaunchResources(R"({"resources": {"tasks_per_node": 2}})", ctx);
    FAIL();
  } catch (const InvalidLaunch& e) {
    EXPECT_EQ(e.field(), "resources");
    EXPECT_NE(std::string(e.what()).find("2 ranks asked"), std::string::npos) << e.what();
  }
  ctx.max_ranks = 8;
  ctx.max_nodes = 1;  // the local launcher: every rank on this host
  try {
    LaunchResources(R"({"resources": {"nodes": 2}})", ctx);
    FAIL();
  } catch (const InvalidLaunch& e) {
    EXPECT_EQ(e.field(), "resources.nodes");
  }
  EXPECT_EQ(LaunchResources(R"({"resources": {"tasks_per_node": 4}})", ctx).tasks_per_node(), 4u);
  // One host's ranks share the monitor's thread limit.
  ctx.max_threads = 4;
  EXPECT_NO_THROW(PrepareLaunchConfig(R"({"threads": 2, "resources": {"tasks_per_node": 2}})", "r", ctx));
  try {
    PrepareLaunchConfig(R"({"threads": 3, "resources": {"tasks_per_node": 2}})", "r", ctx);
    FAIL();
  } catch (const InvalidLaunch& e) {
    EXPECT_EQ(std::string(e.what()), "threads: 3 x 2 ranks a host is 6; must be <= 4 (this monitor's limit for one job)");
  }
  ctx.max_threads = 0;
  // The trainer never sees "resources".
  auto config = nlohmann::json::parse(PrepareLaunchConfig(R"({"resources": {"nodes": 1}})", "r", ctx));
  EXPECT_FALSE(config.contains("resources"));
}

TEST(SystemRunner, returns_the_exit_code_and_both_streams_and_kills_what_runs_too_long) {
  CommandRunner run = SystemRunner(300);
  CommandResult r = run({"sh", "-c", "echo out; echo err >&2; exit 3"}, {"PATH=/usr/bin:/bin"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  r = run({"sh", "-c", "echo \"$ONLY\""}, {"ONLY=this environment"});
  EXPECT_EQ(r.out, "this environment\n");
  r = run({"no-such-program-gradwatch"}, {});
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_NE(r.err.find("cannot run no-such-program-gradwatch"), std::string::npos) << r.err;
  r = run({"sleep", "30"}, {});  // the one wait in these tests: the 300 ms the runner allows
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_NE(r.err.find("did not answer within 300 ms"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gradwatch::jobs
