// Reading runs: runs, run, events, explain, export.
#include <algorithm>

#include "export.h"
#include "verbs.h"

namespace gradwatch::cli {
namespace {

struct RunOptions {
  std::string run_id;
  std::string format = "csv";  // export
};

void AddRunArgument(CLI::App* verb, RunOptions& o) { verb->add_option("RUN", o.run_id, "run id")->required(); }

int ListRuns(Context& ctx) {
  auto resp = ctx.client().Call<v1::ListRunsRequest, v1::ListRunsResponse>(&v1::Runs::Stub::ListRuns, {}, "runs");
  std::vector<v1::Run> runs(resp.runs().begin(), resp.runs().end());
  std::stable_sort(runs.begin(), runs.end(), [](const v1::Run& a, const v1::Run& b) {
    if (a.started_unix_millis() != b.started_unix_millis()) return a.started_unix_millis() > b.started_unix_millis();
    return a.run_id() < b.run_id();
  });
  ctx.print.Runs(runs);
  return 0;
}

// A run the monitor saw, a launched job, or both (a job that failed before its trainer
// reported is only a job).
int ShowRun(Context& ctx, const std::string& run_id) {
  Client& c = ctx.client();
  v1::GetRunRequest req;
  req.set_run_id(run_id);
  v1::Run run;
  grpc::Status run_status = c.TryCall(&v1::Runs::Stub::GetRun, req, &run);
  v1::GetJobRequest jreq;
  jreq.set_job_id(run_id);
  v1::Job job;
  grpc::Status job_status = c.TryCall(&v1::Jobs::Stub::GetJob, jreq, &job);
  if (!run_status.ok() && !job_status.ok()) throw Failure{"run: " + c.Explain(run_status)};
  ctx.print.Run(run_id, run_status.ok() ? &run : nullptr, job_status.ok() ? &job : nullptr);
  return 0;
}

int ListEvents(Context& ctx, const std::string& run_id) {
  v1::ListEventsRequest req;
  req.set_run_id(run_id);
  ctx.print.Events(ctx.client()
                       .Call<v1::ListEventsRequest, v1::ListEventsResponse>(&v1::Runs::Stub::ListEvents, req, "events")
                       .events());
  return 0;
}

int ExplainRun(Context& ctx, const std::string& run_id) {
  v1::ExplainRunRequest req;
  req.set_run_id(run_id);
  auto resp =
      ctx.client().Call<v1::ExplainRunRequest, v1::ExplainRunResponse>(&v1::Runs::Stub::ExplainRun, req, "explain");
  ctx.print.Explanation(run_id, resp.text());
  return 0;
}

}  // namespace

void AddRunVerbs(Verbs& verbs) {
  auto o = std::make_shared<RunOptions>();
  verbs.Add("runs", "list runs, newest first", ListRuns);
  AddRunArgument(verbs.Add("run", "show one run (and its launched job)", [o](Context& c) { return ShowRun(c, o->run_id); }),
                 *o);
  AddRunArgument(
      verbs.Add("events", "list a run's anomaly events", [o](Context& c) { return ListEvents(c, o->run_id); }), *o);
  AddRunArgument(
      verbs.Add("explain", "a plain-text diagnosis of a run", [o](Context& c) { return ExplainRun(c, o->run_id); }),
      *o);
  CLI::App* exp = verbs.Add("export", "every stored step (and eval, in jsonl) of a run", [o](Context& c) {
    Export(c.client(), o->run_id, *MakeStepWriter(o->format, c.out));
    return 0;
  });
  AddRunArgument(exp, *o);
  exp->add_option("--format", o->format, "csv or jsonl")->check(CLI::IsMember({"csv", "jsonl"}))->capture_default_str();
}

}  // namespace gradwatch::cli
