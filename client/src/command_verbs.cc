// Steering a live run: clip, lr, skip, rollback, stop, mode, undo, policy, and the audit
// log of it all (commands). A command waits for the trainer's acknowledgement; its exit
// code is 0 only when the trainer applied it.
#include <cstdlib>

#include "jobs.h"
#include "names.h"
#include "replay.h"
#include "verbs.h"

namespace gradwatch::cli {
namespace {

struct CommandOptions {
  std::string run_id, command_id, mode;
  double max_norm = 0, max_value = 0, scale = 0;
  bool adaptive = false, off = false;
  uint64_t to_step = 0;
  uint32_t grace_ms = 0;
  std::vector<std::string> thresholds, policy;
};

// Prints the outcome; explains on stderr and returns 1 unless the trainer applied it.
int Outcome(Context& ctx, const v1::SendCommandResponse& resp) {
  ctx.print.CommandOutcome(resp);
  const auto& rec = resp.record();
  if (!resp.acknowledged()) {
    ctx.err << "gradwatch: command " << rec.command().id()
            << " sent, but the trainer did not acknowledge it within " << ctx.g.timeout_ms << " ms\n";
    return 1;
  }
  if (rec.ack().result() != v1::CommandAck::RESULT_APPLIED) {
    ctx.err << "gradwatch: the trainer rejected command " << rec.command().id() << ": " << rec.ack().detail() << "\n";
    return 1;
  }
  return 0;
}

int Send(Context& ctx, const std::string& run_id, const std::string& verb, v1::Command command) {
  const char* user = std::getenv("USER");
  command.set_issued_by(std::string("operator:") + (user ? user : "cli"));
  command.set_reason("gradwatch " + verb);
  v1::SendCommandRequest req;
  req.set_run_id(run_id);
  *req.mutable_command() = std::move(command);
  req.set_timeout_ms(static_cast<uint32_t>(ctx.g.timeout_ms));
  return Outcome(ctx, ctx.client().Call<v1::SendCommandRequest, v1::SendCommandResponse>(
                          &v1::Runs::Stub::SendCommand, req, "command", ctx.g.timeout_ms + 5000));
}

v1::Command Clipping(const CommandOptions& o) {
  v1::Command cmd;
  auto* cl = cmd.mutable_set_clipping();
  if (o.off) {
    cl->set_kind(v1::Clipping::KIND_OFF);
  } else if (o.adaptive) {
    cl->set_kind(v1::Clipping::KIND_ADAPTIVE);
  } else if (o.max_value > 0) {
    cl->set_kind(v1::Clipping::KIND_VALUE);
    cl->set_threshold(o.max_value);
  } else {
    cl->set_kind(v1::Clipping::KIND_NORM);
    cl->set_threshold(o.max_norm);
  }
  return cmd;
}

// A launched job is stopped as a job (signals); any other live run by a stop command.
int Stop(Context& ctx, const CommandOptions& o) {
  if (auto code = StopJob(ctx, o.run_id, o.grace_ms)) return *code;
  v1::Command cmd;
  cmd.mutable_stop();
  return Send(ctx, o.run_id, "stop", cmd);
}

int Undo(Context& ctx, const CommandOptions& o) {
  v1::UndoCommandRequest req;
  req.set_run_id(o.run_id);
  req.set_command_id(o.command_id);
  req.set_timeout_ms(static_cast<uint32_t>(ctx.g.timeout_ms));
  return Outcome(ctx, ctx.client().Call<v1::UndoCommandRequest, v1::SendCommandResponse>(
                          &v1::Runs::Stub::UndoCommand, req, "undo", ctx.g.timeout_ms + 5000));
}

int UpdatePolicy(Context& ctx, const CommandOptions& o) {
  v1::UpdatePolicyRequest req;
  req.set_run_id(o.run_id);
  for (const auto& [k, v] : ParseThresholds(o.thresholds)) (*req.mutable_thresholds())[k] = v;
  for (const auto& [k, v] : ParseThresholds(o.policy)) (*req.mutable_policy())[k] = v;
  ctx.print.Policy(ctx.client().Call<v1::UpdatePolicyRequest, v1::Run>(&v1::Runs::Stub::UpdatePolicy, req, "policy"));
  return 0;
}

int ListCommands(Context& ctx, const CommandOptions& o) {
  v1::ListCommandsRequest req;
  req.set_run_id(o.run_id);
  ctx.print.Commands(ctx.client()
                         .Call<v1::ListCommandsRequest, v1::ListCommandsResponse>(&v1::Runs::Stub::ListCommands, req,
                                                                                  "commands")
                         .commands());
  return 0;
}

// Adds a verb that takes RUN and runs `run` with the options.
CLI::App* AddVerb(Verbs& verbs, const std::shared_ptr<CommandOptions>& o, const std::string& name,
                  const std::string& description, int (*run)(Context&, const CommandOptions&)) {
  CLI::App* verb = verbs.Add(name, description, [o, run](Context& c) { return run(c, *o); });
  verb->add_option("RUN", o->run_id, "run id")->required();
  return verb;
}

void AddSteering(Verbs& verbs, const std::shared_ptr<CommandOptions>& o) {
  CLI::App* clip = AddVerb(verbs, o, "clip", "set gradient clipping on a live run", [](Context& c, const CommandOptions& o) {
    return Send(c, o.run_id, "clip", Clipping(o));
  });
  auto* kind = clip->add_option_group("kind")->require_option(1);
  kind->add_option("--max-norm", o->max_norm, "clip the global gradient norm to X");
  kind->add_option("--max-value", o->max_value, "clamp each gradient element to [-X, X]");
  kind->add_flag("--adaptive", o->adaptive, "norm clipping at a threshold from the run's healthy statistics");
  kind->add_flag("--off", o->off, "switch clipping off");
  AddVerb(verbs, o, "lr", "scale a live run's learning rate", [](Context& c, const CommandOptions& o) {
    v1::Command cmd;
    cmd.set_scale_learning_rate(o.scale);
    return Send(c, o.run_id, "lr", cmd);
  })->add_option("--scale", o->scale, "factor, > 0")->required();
  AddVerb(verbs, o, "skip", "skip the next update of a live run", [](Context& c, const CommandOptions& o) {
    v1::Command cmd;
    cmd.mutable_skip_step()->set_count(1);
    return Send(c, o.run_id, "skip", cmd);
  });
  AddVerb(verbs, o, "rollback", "restore the last healthy checkpoint", [](Context& c, const CommandOptions& o) {
    v1::Command cmd;
    cmd.mutable_rollback()->set_to_step(o.to_step);
    return Send(c, o.run_id, "rollback", cmd);
  })->add_option("--to", o->to_step, "the checkpoint's step (default: the last healthy one)");
  AddVerb(verbs, o, "mode", "set a run's mode", [](Context& c, const CommandOptions& o) {
    v1::Command cmd;
    cmd.set_set_mode(o.mode == "observe" ? v1::MODE_OBSERVE : o.mode == "gated" ? v1::MODE_GATED : v1::MODE_GUARD);
    return Send(c, o.run_id, "mode", cmd);
  })->add_option("MODE", o->mode, "observe, guard or gated")->required()->check(CLI::IsMember({"observe", "guard", "gated"}));
}

}  // namespace

void AddCommandVerbs(Verbs& verbs) {
  auto o = std::make_shared<CommandOptions>();
  AddSteering(verbs, o);
  AddVerb(verbs, o, "stop",
          "stop a run: a launched job gets SIGTERM (SIGKILL after the grace period), any other live run a stop "
          "command at its next step",
          Stop)
      ->add_option("--grace-ms", o->grace_ms, "launched jobs: SIGKILL after this long (default: the monitor's)");
  AddVerb(verbs, o, "undo", "revert a clipping, learning-rate or mode command", Undo)
      ->add_option("COMMAND_ID", o->command_id, "the command to revert, e.g. c-000003 (see `gradwatch commands RUN`)")
      ->required();
  CLI::App* policy = AddVerb(verbs, o, "policy", "change a live run's detector thresholds and guard policy", UpdatePolicy);
  policy->add_option("--threshold", o->thresholds, "detector override NAME=VALUE, repeatable");
  policy->add_option("--policy", o->policy,
                     "guard policy override NAME=VALUE (max_recoveries, lr_scale, clip_std, clip_cap, clip_default, "
                     "release_after, release_lr)");
  AddVerb(verbs, o, "commands", "the audit log: every command sent to a run, with its effect", ListCommands);
}

}  // namespace gradwatch::cli
