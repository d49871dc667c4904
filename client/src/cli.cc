#include "gradwatch/cli/cli.h"

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <iostream>
#include <cstdlib>
#include <ctime>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "client.h"
#include "gradwatch/common/printable.h"
#include "jobs.h"
#include "names.h"
#include "replay.h"
#include "watch.h"

namespace gradwatch::cli {
namespace {

using nlohmann::json;

// "defaults", or the overrides as NAME=VALUE, sorted.
std::string Overrides(const google::protobuf::Map<std::string, double>& m) {
  std::map<std::string, double> sorted(m.begin(), m.end());
  std::string out;
  for (const auto& [k, v] : sorted) out += (out.empty() ? "" : ", ") + k + "=" + Num(v);
  return out.empty() ? "defaults" : out;
}

json RunJson(const v1::Run& r) {
  json policy = json::object(), thresholds = json::object();
  for (const auto& [k, v] : r.config().policy()) policy[k] = v;
  for (const auto& [k, v] : r.config().thresholds()) thresholds[k] = v;
  return {{"policy", policy}, {"thresholds", thresholds},{"run_id", r.run_id()},     {"state", v1::StateName(r.state())}, {"mode", v1::ModeName(r.mode())},
          {"steps", r.steps()},       {"last_step", r.last_step()},    {"last_loss", r.last_loss()},
          {"last_grad_norm", r.last_grad_norm()}, {"events", r.events()}, {"incidents", r.incidents()},
          {"total_steps", r.config().total_steps()}, {"device", r.device()}};
}

void PrintRuns(const v1::ListRunsResponse& resp, const Globals& g, std::ostream& out) {
  if (g.json_output) {
    for (const auto& r : resp.runs()) out << RunJson(r).dump() << "\n";
    return;
  }
  out << std::left << std::setw(28) << "RUN" << std::setw(14) << "STATE" << std::setw(9) << "MODE"
      << std::setw(10) << "STEPS" << std::setw(12) << "LOSS" << std::setw(12) << "GRAD_NORM"
      << "EVENTS\n";
  for (const auto& r : resp.runs()) {
    out << std::left << std::setw(28) << r.run_id() << std::setw(14) << v1::StateName(r.state())
        << std::setw(9) << v1::ModeName(r.mode()) << std::setw(10) << r.steps() << std::setw(12)
        << Num(r.last_loss()) << std::setw(12) << Num(r.last_grad_norm()) << r.events() << "\n";
  }
}


// Pages through every stored step.
void ExportSteps(Client& c, const std::string& run_id, const std::string& format, std::ostream& out) {
  if (format == "csv") {
    out << "step,epoch,loss,lr,grad_norm,jaccard_soft,jaccard_hard,accuracy,clip_kind,clip_threshold,"
           "update_skipped\n";
  }
  v1::ListStepsRequest req;
  req.set_run_id(run_id);
  req.set_limit(5000);
  for (;;) {
    auto resp = c.Call<v1::ListStepsRequest, v1::ListStepsResponse>(&v1::Runs::Stub::ListSteps, req,
                                                                     "export");
    for (const auto& s : resp.steps()) {
      if (format == "csv") {
        out << s.step() << "," << s.epoch() << "," << Num(s.loss()) << "," << Num(s.learning_rate())
            << "," << Num(s.grad_norm()) << "," << Num(s.jaccard_soft()) << "," << Num(s.jaccard_hard())
            << "," << Num(s.accuracy()) << "," << s.clipping().kind() << ","
            << Num(s.clipping().threshold()) << "," << s.update_skipped() << "\n";
      } else {
        json layers = json::array();
        for (float v : s.layer_grad_norms()) layers.push_back(v);
        out << json{{"type", "step"}, {"step", s.step()}, {"epoch", s.epoch()}, {"loss", s.loss()},
                    {"lr", s.learning_rate()}, {"grad_norm", s.grad_norm()},
                    {"layer_grad_norms", layers}, {"jaccard_soft", s.jaccard_soft()},
                    {"jaccard_hard", s.jaccard_hard()}, {"accuracy", s.accuracy()},
                    {"clip_kind", v1::Clipping::Kind_Name(s.clipping().kind())},
                    {"clip_threshold", s.clipping().threshold()}, {"update_skipped", s.update_skipped()},
                    {"rolled_back_to", s.rolled_back_to()}}
                   .dump()
            << "\n";
      }
    }
    if (resp.steps_size() < static_cast<int>(req.limit())) break;
    req.set_after_step(resp.steps(resp.steps_size() - 1).step());
  }
  if (format == "jsonl") {
    v1::ListEvalsRequest er;
    er.set_run_id(run_id);
    auto evals = c.Call<v1::ListEvalsRequest, v1::ListEvalsResponse>(&v1::Runs::Stub::ListEvals, er, "export");
    for (const auto& e : evals.evals()) {
      out << json{{"type", "eval"}, {"step", e.step()}, {"loss", e.loss()}, {"jaccard_soft", e.jaccard_soft()},
                  {"jaccard_hard", e.jaccard_hard()}, {"accuracy", e.accuracy()}}
                 .dump()
          << "\n";
    }
  }
}

// Prints a command's outcome; exit code 0 only when the trainer applied it.
int Acknowledged(const v1::SendCommandResponse& resp, const Globals& g, std::ostream& out, std::ostream& err) {
  const auto& rec = resp.record();
  if (g.json_output) {
    out << json{{"command_id", rec.command().id()}, {"acknowledged", resp.acknowledged()},
                {"applied_at_step", rec.ack().applied_at_step()},
                {"result", rec.ack().result() == v1::CommandAck::RESULT_APPLIED ? "applied" : "rejected"},
                {"detail", rec.ack().detail()}}
               .dump()
        << "\n";
  }
  if (!resp.acknowledged()) {
    err << "gradwatch: command " << rec.command().id() << " sent, but the trainer did not acknowledge it within "
        << g.timeout_ms << " ms\n";
    return 1;
  }
  if (rec.ack().result() != v1::CommandAck::RESULT_APPLIED) {
    err << "gradwatch: the trainer rejected command " << rec.command().id() << ": " << rec.ack().detail() << "\n";
    return 1;
  }
  if (!g.json_output) {
    out << rec.command().id() << " applied at step " << rec.ack().applied_at_step();
    if (!rec.ack().detail().empty()) out << " (" << rec.ack().detail() << ")";
    out << "\n";
  }
  return 0;
}

int SendCommand(Client& c, const Globals& g, const std::string& run_id, v1::Command command,
                std::ostream& out, std::ostream& err) {
  v1::SendCommandRequest req;
  req.set_run_id(run_id);
  *req.mutable_command() = std::move(command);
  req.set_timeout_ms(static_cast<uint32_t>(g.timeout_ms));
  return Acknowledged(c.Call<v1::SendCommandRequest, v1::SendCommandResponse>(
                          &v1::Runs::Stub::SendCommand, req, "command", g.timeout_ms + 5000),
                      g, out, err);
}


void PrintCommands(const v1::ListCommandsResponse& resp, const Globals& g, std::ostream& out) {
  for (const auto& r : resp.commands()) {
    const auto& e = r.effect();
    if (g.json_output) {
      out << json{{"command_id", r.command().id()}, {"action", v1::ActionName(r.command())},
                  {"issued_by", r.command().issued_by()}, {"reason", r.command().reason()},
                  {"issued_unix_millis", r.issued_unix_millis()}, {"issued_at_step", r.issued_at_step()},
                  {"applied_at_step", r.ack().applied_at_step()}, {"acknowledged", r.has_ack()},
                  {"detail", r.ack().detail()}, {"loss_before", e.loss_before()}, {"loss_after", e.loss_after()},
                  {"grad_norm_before", e.grad_norm_before()}, {"grad_norm_after", e.grad_norm_after()}}
                 .dump()
          << "\n";
    } else {
      out << r.command().id() << "  " << v1::ActionName(r.command()) << "  by " << r.command().issued_by() << "  step "
          << r.issued_at_step() << " -> "
          << (r.has_ack() ? "applied at " + std::to_string(r.ack().applied_at_step()) : std::string("not acknowledged"))
          << "  loss " << Num(e.loss_before()) << " -> " << Num(e.loss_after()) << ", grad norm "
          << Num(e.grad_norm_before()) << " -> " << Num(e.grad_norm_after()) << "  (" << r.command().reason()
          << ")\n";
    }
  }
}

}  // namespace

int RunCli(int argc, char** argv, std::ostream& raw_out, std::ostream& raw_err) {
  // Text from the monitor (run ids, layer names, messages, job logs) reaches a terminal:
  // control bytes are shown escaped, never interpreted.
  PrintableStream out(raw_out), err(raw_err);
  Globals g;
  g.view_out = &raw_out;
  g.view_out_tty = &raw_out == &std::cout && ::isatty(STDOUT_FILENO);
  g.view_err = &raw_err;
  g.view_err_tty = &raw_err == &std::cerr && ::isatty(STDERR_FILENO);
  if (const char* s = std::getenv("GRADWATCH_SERVER")) g.server = s;
  if (const char* t = std::getenv("GRADWATCH_TOKEN")) g.token = t;

  CLI::App app{"gradwatch — watch and steer training runs monitored by gradwatchd"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may also follow the verb: gradwatch runs --json
  app.add_option("--server", g.server, "gradwatchd address (env GRADWATCH_SERVER)")->capture_default_str();
  app.add_option("--token", g.token, "access token (env GRADWATCH_TOKEN)");
  app.add_flag("--json", g.json_output, "machine-readable output, one JSON object per line");
  app.add_option("--timeout-ms", g.timeout_ms, "deadline for each call")->capture_default_str();
  g.tls = reporter::TlsFromEnv();
  app.add_option("--tls-ca", g.tls.ca, "trust this PEM CA: the monitor uses TLS (env GRADWATCH_TLS_CA)");
  app.add_option("--tls-cert", g.tls.cert, "client certificate, when the monitor asks for one (env GRADWATCH_TLS_CERT)");
  app.add_option("--tls-key", g.tls.key, "the client certificate's key (env GRADWATCH_TLS_KEY)");

  std::string run_id, format = "csv";
  auto* runs = app.add_subcommand("runs", "list runs");
  auto* run = app.add_subcommand("run", "show one run");
  run->add_option("RUN", run_id, "run id")->required();
  auto* events = app.add_subcommand("events", "list a run's anomaly events");
  events->add_option("RUN", run_id, "run id")->required();
  auto* explain = app.add_subcommand("explain", "a plain-text diagnosis of a run");
  explain->add_option("RUN", run_id, "run id")->required();
  auto* exp = app.add_subcommand("export", "every stored step (and eval, in jsonl) of a run");
  exp->add_option("RUN", run_id, "run id")->required();
  exp->add_option("--format", format, "csv or jsonl")->check(CLI::IsMember({"csv", "jsonl"}))->capture_default_str();

  ReplayOptions ro;
  auto* replay = app.add_subcommand("replay", "run a recorded trace (gradwatch CSV or Keras CSVLogger) through the detectors, or deliver a trainer's spool");
  replay->add_option("FILE", ro.file, "the trace")->required()->check(CLI::ExistingFile);
  replay->add_flag("--offline", ro.offline, "detect in this process; without it, stream into the monitor as a new run");
  replay->add_option("--format", ro.format, "auto (the header decides), gradwatch-csv or keras-csv")
      ->check(CLI::IsMember({"auto", "gradwatch-csv", "keras-csv"}))->capture_default_str();
  replay->add_option("--run-id", ro.run_id, "run id for the replayed run (default: generated)");
  replay->add_option("--loss-bound", ro.loss_bound, "the loss's upper bound (1 for a Jaccard or Dice loss; 0 = unbounded)")
      ->capture_default_str();
  replay->add_option("--threshold", ro.thresholds, "detector override NAME=VALUE, repeatable (e.g. spike_z_critical=6)");

  std::string command_id;
  std::vector<std::string> policy_items, threshold_items;
  auto* undo = app.add_subcommand("undo", "revert a clipping, learning-rate or mode command");
  undo->add_option("RUN", run_id, "run id")->required();
  undo->add_option("COMMAND_ID", command_id, "the command to revert, e.g. c-000003 (see `gradwatch commands RUN`)")
      ->required();
  auto* commands = app.add_subcommand("commands", "the audit log: every command sent to a run, with its effect");
  commands->add_option("RUN", run_id, "run id")->required();
  auto* policy = app.add_subcommand("policy", "change a live run's detector thresholds and guard policy");
  policy->add_option("RUN", run_id, "run id")->required();
  policy->add_option("--threshold", threshold_items, "detector override NAME=VALUE, repeatable");
  policy->add_option("--policy", policy_items,
                     "guard policy override NAME=VALUE (max_recoveries, lr_scale, clip_std, clip_cap, clip_default)");

  double max_norm = 0, max_value = 0, scale = 0;
  bool adaptive = false, off = false;
  uint64_t to_step = 0;
  std::string mode;
  auto* clip = app.add_subcommand("clip", "set gradient clipping on a live run");
  clip->add_option("RUN", run_id, "run id")->required();
  auto* clip_kind = clip->add_option_group("kind")->require_option(1);
  clip_kind->add_option("--max-norm", max_norm, "clip the global gradient norm to X");
  clip_kind->add_option("--max-value", max_value, "clamp each gradient element to [-X, X]");
  clip_kind->add_flag("--adaptive", adaptive, "norm clipping at a threshold from the run's healthy statistics");
  clip_kind->add_flag("--off", off, "switch clipping off");
  auto* lr = app.add_subcommand("lr", "scale a live run's learning rate");
  lr->add_option("RUN", run_id, "run id")->required();
  lr->add_option("--scale", scale, "factor, > 0")->required();
  auto* skip = app.add_subcommand("skip", "skip the next update of a live run");
  skip->add_option("RUN", run_id, "run id")->required();
  auto* rollback = app.add_subcommand("rollback", "restore the last healthy checkpoint");
  rollback->add_option("RUN", run_id, "run id")->required();
  rollback->add_option("--to", to_step, "the checkpoint's step (default: the last healthy one)");
  uint32_t grace_ms = 0;
  auto* stop = app.add_subcommand(
      "stop", "stop a run: a launched job gets SIGTERM (SIGKILL after the grace period), any other live run a "
              "stop command at its next step");
  stop->add_option("RUN", run_id, "run id")->required();
  stop->add_option("--grace-ms", grace_ms, "launched jobs: SIGKILL after this long (default: the monitor's)");

  LaunchOptions lo;
  auto* launch = app.add_subcommand(
      "launch",
      "launch a training job on the monitor's host, print its run id and follow it to its end "
      "(exit code 0 succeeded, 1 failed, 3 stopped)");
  launch->add_option("CONFIG", lo.config_file, "gradwatch-train JSON config (see gradwatch-train --print-config)")
      ->check(CLI::ExistingFile);
  launch->add_option("--run-id", lo.run_id, "run id (default: generated)");
  launch->add_option("--set", lo.sets, "config field FIELD=VALUE over CONFIG, repeatable (steps=200, data.dir=tiles)");
  launch->add_flag("--detach", lo.detach, "print the run id and return at once");
  bool follow = false;
  auto* logs = app.add_subcommand("logs", "a launched job's output (the trainer's stdout and stderr)");
  logs->add_option("RUN", run_id, "run id")->required();
  logs->add_flag("-f,--follow", follow, "keep printing until the job ends");
  auto* jobs = app.add_subcommand("jobs", "list launched jobs");
  auto* watch = app.add_subcommand("watch", "follow a run live until it ends (a view on a terminal, lines otherwise)");
  watch->add_option("RUN", run_id, "run id")->required();
  auto* mode_cmd = app.add_subcommand("mode", "set a run's mode");
  mode_cmd->add_option("RUN", run_id, "run id")->required();
  mode_cmd->add_option("MODE", mode, "observe, guard or gated")
      ->required()->check(CLI::IsMember({"observe", "guard", "gated"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }

  try {
    if (replay->parsed()) return Replay(ro, g, out, err);
    Client c(g);
    if (runs->parsed()) {
      PrintRuns(c.Call<v1::ListRunsRequest, v1::ListRunsResponse>(&v1::Runs::Stub::ListRuns, {}, "runs"), g, out);
    } else if (launch->parsed()) {
      return Launch(c, g, lo, out, err);
    } else if (logs->parsed()) {
      return Logs(c, run_id, follow, out);
    } else if (jobs->parsed()) {
      PrintJobs(c.Call<v1::ListJobsRequest, v1::ListJobsResponse>(&v1::Jobs::Stub::ListJobs, {}, "jobs"), g, out);
    } else if (auto stopped = stop->parsed() ? StopJob(c, g, run_id, grace_ms, out, err) : std::nullopt) {
      return *stopped;
    } else if (run->parsed()) {
      // A run the monitor saw, a launched job, or both (a job that failed before its
      // trainer reported is only a job).
      v1::GetRunRequest req;
      req.set_run_id(run_id);
      v1::Run r;
      grpc::Status run_status = c.TryCall(&v1::Runs::Stub::GetRun, req, &r);
      v1::GetJobRequest jreq;
      jreq.set_job_id(run_id);
      v1::Job job;
      grpc::Status job_status = c.TryCall(&v1::Jobs::Stub::GetJob, jreq, &job);
      if (!run_status.ok() && !job_status.ok()) throw Failure{"run: " + c.Explain(run_status)};
      if (g.json_output) {
        json j = run_status.ok() ? RunJson(r) : json{{"run_id", run_id}};
        if (job_status.ok()) j["job"] = JobJson(job);
        out << j.dump() << "\n";
      } else if (!run_status.ok()) {
        out << "run        " << run_id << "\n";
      } else {
        out << "run        " << r.run_id() << "\nstate      " << v1::StateName(r.state()) << "\nmode       "
            << v1::ModeName(r.mode()) << "\nsteps      " << r.steps() << " (last " << r.last_step();
        if (r.config().total_steps()) out << " of " << r.config().total_steps();
        out << ")\nloss       " << Num(r.last_loss()) << "\ngrad norm  " << Num(r.last_grad_norm())
            << "\npolicy     " << Overrides(r.config().policy()) << "\nthresholds "
            << Overrides(r.config().thresholds()) << "\nevents     " << r.events() << "\nincidents  "
            << r.incidents() << "\nmodel      "
            << r.config().model() << "\noptimizer  " << r.config().optimizer() << "\ndevice     "
            << r.device() << "\n";
      }
      if (!g.json_output && job_status.ok()) {
        out << "job        " << v1::JobStateName(job.state());
        if (v1::JobEnded(job.state()) && job.exit_code() != -1) out << " (exit code " << job.exit_code() << ")";
        if (job.pid()) out << " (pid " << job.pid() << ")";
        out << "\n";
        if (!job.error().empty()) out << "error      " << job.error() << "\n";
      }
    } else if (events->parsed()) {
      v1::ListEventsRequest req;
      req.set_run_id(run_id);
      PrintEvents(c.Call<v1::ListEventsRequest, v1::ListEventsResponse>(&v1::Runs::Stub::ListEvents, req, "events"),
                  g, out);
    } else if (explain->parsed()) {
      v1::ExplainRunRequest req;
      req.set_run_id(run_id);
      out << c.Call<v1::ExplainRunRequest, v1::ExplainRunResponse>(&v1::Runs::Stub::ExplainRun, req, "explain")
                 .text();
    } else if (exp->parsed()) {
      ExportSteps(c, run_id, format, out);
    } else if (watch->parsed()) {
      return Watch(c, g, run_id, err);
    } else if (commands->parsed()) {
      v1::ListCommandsRequest req;
      req.set_run_id(run_id);
      PrintCommands(c.Call<v1::ListCommandsRequest, v1::ListCommandsResponse>(&v1::Runs::Stub::ListCommands, req,
                                                                             "commands"),
                    g, out);
    } else if (policy->parsed()) {
      v1::UpdatePolicyRequest req;
      req.set_run_id(run_id);
      for (const auto& [k, v] : ParseThresholds(threshold_items)) (*req.mutable_thresholds())[k] = v;
      for (const auto& [k, v] : ParseThresholds(policy_items)) (*req.mutable_policy())[k] = v;
      auto r = c.Call<v1::UpdatePolicyRequest, v1::Run>(&v1::Runs::Stub::UpdatePolicy, req, "policy");
      json j = {{"run_id", r.run_id()}, {"thresholds", json::object()}, {"policy", json::object()}};
      for (const auto& [k, v] : r.config().thresholds()) j["thresholds"][k] = v;
      for (const auto& [k, v] : r.config().policy()) j["policy"][k] = v;
      out << (g.json_output ? j.dump() : j.dump(2)) << "\n";
    } else if (undo->parsed()) {
      v1::UndoCommandRequest req;
      req.set_run_id(run_id);
      req.set_command_id(command_id);
      req.set_timeout_ms(static_cast<uint32_t>(g.timeout_ms));
      return Acknowledged(c.Call<v1::UndoCommandRequest, v1::SendCommandResponse>(
                              &v1::Runs::Stub::UndoCommand, req, "undo", g.timeout_ms + 5000),
                          g, out, err);
    } else {
      v1::Command cmd;
      if (clip->parsed()) {
        auto* cl = cmd.mutable_set_clipping();
        if (off) cl->set_kind(v1::Clipping::KIND_OFF);
        else if (adaptive) cl->set_kind(v1::Clipping::KIND_ADAPTIVE);
        else if (max_value > 0) { cl->set_kind(v1::Clipping::KIND_VALUE); cl->set_threshold(max_value); }
        else { cl->set_kind(v1::Clipping::KIND_NORM); cl->set_threshold(max_norm); }
      } else if (lr->parsed()) {
        cmd.set_scale_learning_rate(scale);
      } else if (skip->parsed()) {
        cmd.mutable_skip_step()->set_count(1);
      } else if (rollback->parsed()) {
        cmd.mutable_rollback()->set_to_step(to_step);
      } else if (stop->parsed()) {
        cmd.mutable_stop();
      } else if (mode_cmd->parsed()) {
        cmd.set_set_mode(mode == "observe" ? v1::MODE_OBSERVE : mode == "gated" ? v1::MODE_GATED : v1::MODE_GUARD);
      }
      const char* user = std::getenv("USER");
      cmd.set_issued_by(std::string("operator:") + (user ? user : "cli"));
      cmd.set_reason("gradwatch " + app.get_subcommands().front()->get_name());
      return SendCommand(c, g, run_id, cmd, out, err);
    }
  } catch (const Failure& f) {
    err << "gradwatch: " << f.message << "\n";
    return 1;
  }
  return 0;
}

}  // namespace gradwatch::cli
