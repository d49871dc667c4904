// launch, jobs, logs, and stopping a launched job.
#include "jobs.h"

#include <thread>

#include "gradwatch/jobs/kubernetes.h"
#include "gradwatch/jobs/launch_config.h"
#include "launch_config.h"
#include "names.h"
#include "watch.h"

namespace gradwatch::cli {
namespace {

// 0 succeeded, 1 failed or lost, 3 stopped.
int JobExitCode(const v1::Job& j) {
  if (j.state() == v1::JOB_STATE_SUCCEEDED) return 0;
  return j.state() == v1::JOB_STATE_STOPPED ? 3 : 1;
}

v1::Job GetJob(Client& c, const std::string& job_id, const char* what) {
  v1::GetJobRequest get;
  get.set_job_id(job_id);
  return c.Call<v1::GetJobRequest, v1::Job>(&v1::Jobs::Stub::GetJob, get, what);
}

// The job's WatchJob stream: the job now, then each change, ending after its final state.
class JobWatch {
 public:
  JobWatch(Client& c, const std::string& job_id) {
    c.Authorize(call_);
    v1::GetJobRequest req;
    req.set_job_id(job_id);
    reader_ = c.jobs().WatchJob(&call_, req);
  }
  ~JobWatch() { call_.TryCancel(); }  // a stream left early (an error) is not left open
  // The next version of the job; false when the stream has ended (see Finish).
  bool Next(v1::Job* job) { return reader_->Read(job); }
  grpc::Status Finish() {
    v1::Job rest;
    while (reader_->Read(&rest)) {
    }
    return reader_->Finish();
  }

 private:
  grpc::ClientContext call_;
  std::unique_ptr<grpc::ClientReader<v1::Job>> reader_;
};

// Shows the job's run live (on stderr) once its trainer has said hello. Until then the run
// is unknown (NOT_FOUND): it asks again every 250 ms while the job still runs.
void FollowJobRun(Context& ctx, const v1::Job& job) {
  Client& c = ctx.client();
  for (;;) {
    Followed f = FollowRun(c, job.run_id(), *ctx.g.view_err, ctx.g.view_err_tty);
    if (f.updates) return;
    if (!f.status.ok() && f.status.error_code() != grpc::StatusCode::NOT_FOUND) {
      throw Failure{"watch: " + c.Explain(f.status)};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    if (v1::JobEnded(GetJob(c, job.job_id(), "job").state())) return;
  }
}

// " (pid 12)", or " (slurm job 42: PENDING (Resources))".
std::string Where(const v1::Job& job) {
  if (!job.scheduler_job_id().empty()) {
    return " (" + job.launcher() + " job " + job.scheduler_job_id() +
           (job.scheduler_state().empty() ? "" : ": " + job.scheduler_state()) + ")";
  }
  return job.pid() ? " (pid " + std::to_string(job.pid()) + ")" : "";
}

// Follows a job to its end: its state changes and the run's live view (on stderr) while it
// runs, then its outcome.
int FollowJob(Context& ctx, const std::string& job_id) {
  Client& c = ctx.client();
  JobWatch watch(c, job_id);
  v1::JobState shown = v1::JOB_STATE_UNSPECIFIED;
  std::string shown_scheduler;
  bool watched = false;
  v1::Job job;
  while (watch.Next(&job)) {
    if (v1::JobEnded(job.state())) {
      watch.Finish();
      ctx.print.LaunchEnded(job);
      ctx.err << "gradwatch: " << JobOutcome(job) << "\n";
      return JobExitCode(job);
    }
    if (job.state() != shown || job.scheduler_state() != shown_scheduler) {
      ctx.err << "gradwatch: job " << job_id << " " << v1::JobStateName(job.state()) << Where(job) << "\n";
    }
    shown = job.state();
    shown_scheduler = job.scheduler_state();
    if (job.state() == v1::JOB_STATE_RUNNING && !watched) {
      FollowJobRun(ctx, job);
      watched = true;
    }
  }
  throw Failure{"job " + job_id + ": the monitor's job stream ended before the job did: " + c.Explain(watch.Finish())};
}

// The launch as a Kubernetes manifest on stdout; the monitor is not asked.
int RenderKubernetes(Context& ctx, const LaunchOptions& o) {
  if (!o.dry_run) {
    throw Failure{"launch: gradwatchd has no Kubernetes launcher; add --dry-run to print the manifest, then "
                  "`kubectl apply -f FILE`"};
  }
  jobs::KubernetesOptions k;
  k.image = o.image;
  k.monitor_address = o.monitor_address;
  k.token_secret = o.token_secret;
  k.name_space = o.name_space;
  try {
    ctx.out << jobs::RenderKubernetesJob(LaunchConfigJson(o), o.run_id, k);
  } catch (const jobs::InvalidLaunch& e) {
    throw Failure{"launch: " + std::string(e.what())};
  }
  return 0;
}

int Launch(Context& ctx, const LaunchOptions& o) {
  if (o.launcher == "kubernetes") return RenderKubernetes(ctx, o);
  if (o.dry_run) throw Failure{"launch: --dry-run renders a manifest: use it with --launcher kubernetes"};
  v1::LaunchRequest req;
  req.set_config_json(LaunchConfigJson(o));  // checked before the monitor is asked
  req.set_run_id(o.run_id);
  v1::Job job = ctx.client().Call<v1::LaunchRequest, v1::Job>(&v1::Jobs::Stub::Launch, req, "launch");
  ctx.print.Launched(job, o.detach);
  if (o.detach) return 0;
  return FollowJob(ctx, job.job_id());
}

int Logs(Context& ctx, const std::string& job_id, bool follow) {
  Client& c = ctx.client();
  grpc::ClientContext call;
  c.Authorize(call);
  v1::LogsRequest req;
  req.set_job_id(job_id);
  req.set_follow(follow);
  auto reader = c.jobs().Logs(&call, req);
  v1::LogChunk chunk;
  while (reader->Read(&chunk)) {
    ctx.out << chunk.data();
    ctx.out.flush();
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) throw Failure{"logs: " + c.Explain(status)};
  return 0;
}

int ListJobs(Context& ctx) {
  ctx.print.Jobs(
      ctx.client().Call<v1::ListJobsRequest, v1::ListJobsResponse>(&v1::Jobs::Stub::ListJobs, {}, "jobs").jobs());
  return 0;
}

}  // namespace

std::optional<int> StopJob(Context& ctx, const std::string& job_id, uint32_t grace_ms) {
  Client& c = ctx.client();
  v1::StopJobRequest req;
  req.set_job_id(job_id);
  req.set_grace_ms(grace_ms);
  v1::Job job;
  grpc::Status status = c.TryCall(&v1::Jobs::Stub::StopJob, req, &job);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) return std::nullopt;
  if (!status.ok()) throw Failure{"stop: " + c.Explain(status)};
  if (!v1::JobEnded(job.state())) {
    JobWatch watch(c, job_id);
    while (!v1::JobEnded(job.state())) {
      if (!watch.Next(&job)) throw Failure{"stop: the monitor's job stream ended before the job did: " + c.Explain(watch.Finish())};
    }
    watch.Finish();
  }
  ctx.print.JobStopped(job);
  return job.state() == v1::JOB_STATE_STOPPED ? 0 : 1;
}

void AddJobVerbs(Verbs& verbs) {
  auto lo = std::make_shared<LaunchOptions>();
  CLI::App* launch = verbs.Add("launch",
                               "launch a training job through the monitor (on its host, or on Slurm with gradwatchd --launcher slurm), print its run id and follow it to its end "
                               "(exit code 0 succeeded, 1 failed, 3 stopped)",
                               [lo](Context& c) { return Launch(c, *lo); });
  launch->add_option("CONFIG", lo->config_file, "gradwatch-train JSON config (see gradwatch-train --print-config)")
      ->check(CLI::ExistingFile);
  launch->add_option("--run-id", lo->run_id, "run id (default: generated)");
  launch->add_option("--set", lo->sets, "config field FIELD=VALUE over CONFIG, repeatable (steps=200, data.dir=tiles)");
  launch->add_flag("--detach", lo->detach, "print the run id and return at once");
  launch->add_option("--launcher", lo->launcher,
                     "monitor: launch through the monitor (its --launcher: local or slurm); kubernetes: with "
                     "--dry-run, print a Kubernetes Indexed Job for `kubectl apply -f`")
      ->check(CLI::IsMember({"monitor", "kubernetes"}))->capture_default_str();
  launch->add_flag("--dry-run", lo->dry_run, "print the manifest, launch nothing (--launcher kubernetes)");
  launch->add_option("--image", lo->image, "Kubernetes: the container image holding gradwatch-train");
  launch->add_option("--monitor-address", lo->monitor_address, "Kubernetes: host:port the pods reach the monitor at");
  launch->add_option("--token-secret", lo->token_secret,
                     "Kubernetes: the Secret whose key \"token\" holds the reporter token (GRADWATCH_TOKEN)");
  launch->add_option("--namespace", lo->name_space, "Kubernetes: the namespace (default: kubectl's current one)");

  struct LogOptions {
    std::string job_id;
    bool follow = false;
  };
  auto log = std::make_shared<LogOptions>();
  CLI::App* logs = verbs.Add("logs", "a launched job's output (the trainer's stdout and stderr)",
                             [log](Context& c) { return Logs(c, log->job_id, log->follow); });
  logs->add_option("RUN", log->job_id, "run id")->required();
  logs->add_flag("-f,--follow", log->follow, "keep printing until the job ends");

  verbs.Add("jobs", "list launched jobs", ListJobs);
}

}  // namespace gradwatch::cli
