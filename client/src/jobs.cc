#include "jobs.h"

#include <unistd.h>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "gradwatch/common/file.h"
#include "names.h"
#include "watch.h"

namespace gradwatch::cli {

using nlohmann::json;

namespace {

std::string JobOutcome(const v1::Job& j) {
  std::string out = std::string("job ") + j.job_id() + " " + v1::JobStateName(j.state());
  if (v1::JobEnded(j.state()) && j.exit_code() != -1) out += " (exit code " + std::to_string(j.exit_code()) + ")";
  if (j.started_unix_millis() && j.ended_unix_millis()) {
    out += " after " + Num((j.ended_unix_millis() - j.started_unix_millis()) / 1000.0) + " s";
  }
  if (!j.error().empty()) out += ": " + j.error();
  return out;
}

// 0 succeeded, 1 failed or lost, 3 stopped.
int JobExitCode(const v1::Job& j) {
  if (j.state() == v1::JOB_STATE_SUCCEEDED) return 0;
  return j.state() == v1::JOB_STATE_STOPPED ? 3 : 1;
}

std::string LaunchConfig(const LaunchOptions& o) {
  json config = json::object();
  if (!o.config_file.empty()) {
    std::string text;
    bool read = ReadWholeFile(o.config_file, &text);
    config = json::parse(text, nullptr, false, /*ignore_comments=*/true);
    if (!read || config.is_discarded() || !config.is_object()) {
      throw Failure{"launch: " + o.config_file + " is not a JSON object"};
    }
  }
  for (const auto& item : o.sets) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) throw Failure{"launch: --set " + item + ": expected FIELD=VALUE"};
    std::string path = item.substr(0, eq), text = item.substr(eq + 1);
    json value = json::parse(text, nullptr, false);
    if (value.is_discarded()) value = text;  // a bare word: a string
    json* at = &config;
    for (size_t from = 0;;) {  // "data.dir" sets config["data"]["dir"]
      size_t dot = path.find('.', from);
      std::string key = path.substr(from, dot == std::string::npos ? std::string::npos : dot - from);
      if (dot == std::string::npos) {
        (*at)[key] = value;
        break;
      }
      if (!(*at)[key].is_object()) (*at)[key] = json::object();
      at = &(*at)[key];
      from = dot + 1;
    }
  }
  return config.dump();
}

// Follows a job to its end: the run's live view (on stderr) while it runs, then its outcome.
int FollowJob(Client& c, const Globals& g, const std::string& job_id, std::ostream& out, std::ostream& err) {
  v1::GetJobRequest get;
  get.set_job_id(job_id);
  v1::JobState shown = v1::JOB_STATE_UNSPECIFIED;
  bool watched = false;
  for (;;) {
    v1::Job job = c.Call<v1::GetJobRequest, v1::Job>(&v1::Jobs::Stub::GetJob, get, "job");
    if (job.state() != shown) {
      shown = job.state();
      if (!v1::JobEnded(shown)) {
        err << "gradwatch: job " << job_id << " " << v1::JobStateName(shown)
            << (job.pid() ? " (pid " + std::to_string(job.pid()) + ")" : "") << "\n";
      }
    }
    if (v1::JobEnded(job.state())) {
      if (g.json_output) out << JobJson(job).dump() << "\n";
      err << "gradwatch: " << JobOutcome(job) << "\n";
      return JobExitCode(job);
    }
    if (job.state() == v1::JOB_STATE_RUNNING && !watched) {
      // Until the trainer says hello the run is unknown (NOT_FOUND): try again shortly.
      Followed f = FollowRun(c, job.run_id(), *g.view_err, g.view_err_tty);
      if (!f.status.ok() && f.status.error_code() != grpc::StatusCode::NOT_FOUND) {
        throw Failure{"watch: " + c.Explain(f.status)};
      }
      watched = f.updates;
      if (watched) continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace

json JobJson(const v1::Job& j) {
  return {{"job_id", j.job_id()},   {"run_id", j.run_id()},
          {"state", v1::JobStateName(j.state())}, {"exit_code", j.exit_code()},
          {"error", j.error()},     {"pid", j.pid()},
          {"created_unix_millis", j.created_unix_millis()}, {"started_unix_millis", j.started_unix_millis()},
          {"ended_unix_millis", j.ended_unix_millis()}};
}

void PrintJobs(const v1::ListJobsResponse& resp, const Globals& g, std::ostream& out) {
  if (g.json_output) {
    for (const auto& j : resp.jobs()) out << JobJson(j).dump() << "\n";
    return;
  }
  out << std::left << std::setw(28) << "JOB" << std::setw(11) << "STATE" << std::setw(6) << "EXIT"
      << "ERROR\n";
  for (const auto& j : resp.jobs()) {
    out << std::setw(28) << j.job_id() << std::setw(11) << v1::JobStateName(j.state()) << std::setw(6)
        << (v1::JobEnded(j.state()) ? std::to_string(j.exit_code()) : "-") << j.error().substr(0, 80) << "\n";
  }
}


int Launch(Client& c, const Globals& g, const LaunchOptions& o, std::ostream& out, std::ostream& err) {
  v1::LaunchRequest req;
  req.set_config_json(LaunchConfig(o));
  req.set_run_id(o.run_id);
  v1::Job job = c.Call<v1::LaunchRequest, v1::Job>(&v1::Jobs::Stub::Launch, req, "launch");
  if (o.detach && g.json_output) {
    out << JobJson(job).dump() << "\n";
  } else if (!g.json_output) {
    out << job.run_id() << "\n";
    out.flush();
  }
  if (o.detach) return 0;
  return FollowJob(c, g, job.job_id(), out, err);
}

int Logs(Client& c, const std::string& job_id, bool follow, std::ostream& out) {
  grpc::ClientContext ctx;
  c.Authorize(ctx);
  v1::LogsRequest req;
  req.set_job_id(job_id);
  req.set_follow(follow);
  auto reader = c.jobs().Logs(&ctx, req);
  v1::LogChunk chunk;
  while (reader->Read(&chunk)) {
    out << chunk.data();
    out.flush();
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) throw Failure{"logs: " + c.Explain(status)};
  return 0;
}

std::optional<int> StopJob(Client& c, const Globals& g, const std::string& job_id, uint32_t grace_ms,
                           std::ostream& out, std::ostream& err) {
  v1::StopJobRequest req;
  req.set_job_id(job_id);
  req.set_grace_ms(grace_ms);
  v1::Job job;
  grpc::Status status = c.TryCall(&v1::Jobs::Stub::StopJob, req, &job);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) return std::nullopt;
  if (!status.ok()) throw Failure{"stop: " + c.Explain(status)};
  v1::GetJobRequest get;
  get.set_job_id(job_id);
  while (!v1::JobEnded(job.state())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    job = c.Call<v1::GetJobRequest, v1::Job>(&v1::Jobs::Stub::GetJob, get, "stop");
  }
  if (g.json_output) {
    out << JobJson(job).dump() << "\n";
  } else {
    out << JobOutcome(job) << "\n";
  }
  return job.state() == v1::JOB_STATE_STOPPED ? 0 : 1;
}

}  // namespace gradwatch::cli
