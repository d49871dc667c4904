#include "explain.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>

#include "gradwatch/common/format.h"
#include "convert.h"

namespace gradwatch::monitor {
namespace {

std::string Fmt(double v) { return FormatNumber(v, 3); }

// What the hub appends to the message of an event whose step gated mode vetoed.
constexpr const char* kGatedMark = "; gated mode: ";

// What a person calls each event kind.
const char* Plain(const std::string& kind) {
  if (kind == "grad_spike") return "gradient explosion";
  if (kind == "non_finite") return "non-finite values";
  if (kind == "loss_spike") return "loss spike";
  if (kind == "divergence") return "divergence";
  if (kind == "collapse") return "collapse";
  if (kind == "vanishing") return "vanishing gradients";
  if (kind == "val_collapse") return "validation collapse";
  if (kind == "lr_jump") return "learning-rate jump";
  if (kind == "update_size") return "oversized update";
  if (kind == "no_progress") return "no progress";
  if (kind == "data_suspect") return "suspect data";
  if (kind == "rank_departure") return "rank departure";
  if (kind == "straggler") return "straggler";
  if (kind == "hang") return "hang";
  if (kind == "rank_lag") return "rank lag";
  if (kind == "rank_lost") return "rank lost";
  return "alert";
}

// Mean loss and grad-norm statistics of the stored steps in [from, to].
struct Window {
  size_t n = 0;
  double loss = 0, norm_median = 0, norm_max = 0;
};

Window Stats(const std::vector<v1::StepReport>& steps, uint64_t from, uint64_t to) {
  Window w;
  std::vector<double> norms;
  for (const auto& s : steps) {
    if (s.step() < from || s.step() > to || !std::isfinite(s.loss())) continue;
    w.loss += s.loss();
    ++w.n;
    if (std::isfinite(s.grad_norm())) norms.push_back(s.grad_norm());
  }
  if (w.n) w.loss /= double(w.n);
  if (!norms.empty()) {
    std::sort(norms.begin(), norms.end());
    w.norm_median = norms[norms.size() / 2];
    w.norm_max = norms.back();
  }
  return w;
}

std::string Action(const v1::CommandRecord& c) {
  const v1::Command& cmd = c.command();
  std::ostringstream s;
  if (cmd.has_set_clipping()) {
    if (cmd.set_clipping().kind() == v1::Clipping::KIND_OFF) s << "clipping switched off";
    else s << "clipping at " << Fmt(cmd.set_clipping().threshold());
  } else if (cmd.has_scale_learning_rate()) {
    s << "learning rate x" << Fmt(cmd.scale_learning_rate());
  } else if (cmd.has_skip_step()) {
    s << "skipped " << cmd.skip_step().count() << " update(s)";
  } else if (cmd.has_rollback()) {
    s << (c.ack().detail().empty() ? "rollback" : c.ack().detail());
  } else if (cmd.has_stop()) {
    s << "stopped";
  } else {
    s << ActionName(cmd);
  }
  if (c.has_ack()) {
    s << " (step " << c.ack().applied_at_step() << ", " << cmd.issued_by()
      << (c.ack().result() == v1::CommandAck::RESULT_APPLIED ? ")" : ", rejected)");
  } else {
    s << " (" << cmd.issued_by() << ", not acknowledged)";
  }
  return s.str();
}

// Data parallel: the first of these events of `kind` that names a rank, or nullptr.
const v1::Event* Named(const std::vector<const v1::Event*>& events, const char* kind) {
  for (const auto* e : events) {
    if (e->kind() == kind && e->has_rank()) return e;
  }
  return nullptr;
}

// The fix that fits an incident of these kinds (plain names), from the healthy steps before it.
void Suggest(std::ostringstream& out, const std::vector<std::string>& kinds, const Window& before, uint64_t first,
             const std::string& leader, const std::vector<const v1::Event*>& events) {
  auto has = [&](const char* kind) { return std::find(kinds.begin(), kinds.end(), kind) != kinds.end(); };
  // "rank R" as the incident's first event of `kind` names it, else `otherwise`.
  auto who = [&](const char* kind, const char* otherwise) {
    const v1::Event* e = Named(events, kind);
    return e ? "rank " + std::to_string(e->rank()) : std::string(otherwise);
  };
  const bool exploded = has("gradient explosion");
  const bool collapsed = has("collapse") || has("validation collapse");
  out << "  Suggested fix: ";
  if (has("rank lost")) {
    out << "find why " << who("rank_lost", "the rank") << " ended (its log, the host's kernel log for the "
           "OOM killer, the scheduler's record of the task); the other ranks wait for it until their collective "
           "times out: restart the job from its last checkpoint";
  } else if (has("hang")) {
    const v1::Event* hung = Named(events, "hang");
    out << (hung ? "see where rank " + std::to_string(hung->rank()) + " is stuck while the others wait"
                 : std::string("see where every rank is stuck"))
        << " (py-spy dump --pid PID, or gdb -p PID -batch -ex 'thread apply all bt') before the collective's "
           "timeout kills the job; then restart it from its last checkpoint";
  } else if (has("learning-rate jump") || (has("oversized update") && !exploded)) {
    out << "find what raised the learning rate (schedule, warm restart, a scaled LR) or made the update "
           "this large; gated mode vetoes such steps before they land";
  } else if (has("suspect data")) {
    out << "inspect the batches of the steps named (corrupt or extreme samples); clipping only hides them";
  } else if (has("no progress")) {
    out << "raise the learning rate, or check that the model can fit the data (labels, inputs, loss)";
  } else if (has("rank departure")) {
    const v1::Event* departed = Named(events, "rank_departure");
    out << "inspect the batch " << who("rank_departure", "the named rank") << " trained on at step "
        << (departed ? departed->step() : first)
        << " (its data shard: corrupt, extreme or mislabelled samples): one rank's batch is the cause";
    if (exploded && before.norm_max > 0)
      out << "; clip the global gradient norm at ~" << Fmt(std::max(before.norm_max, 2 * before.norm_median))
          << " so that one rank's batch cannot blow up the averaged update";
  } else if (exploded && before.norm_max > 0) {
    double clip = std::max(before.norm_max, 2 * before.norm_median);
    out << "clip the global gradient norm at ~" << Fmt(clip) << " (healthy norms: median "
        << Fmt(before.norm_median) << ", max " << Fmt(before.norm_max) << " before step " << first
        << "), or lower the learning rate";
    if (!leader.empty()) out << "; look at what feeds " << leader;
  } else if (has("non-finite values")) {
    out << "find the source of the NaN/Inf (data, a division, an overflow in mixed precision); skip such "
           "updates (gated mode) and lower the learning rate";
  } else if (collapsed) {
    out << "roll back to a checkpoint before step " << first << " and lower the learning rate; clip the "
           "gradient norm so one bad step cannot saturate the output";
  } else if (has("straggler")) {
    out << "look at " << who("straggler", "the slow rank") << "'s host (a slower or throttled GPU, a busy "
           "CPU, its input pipeline, its network link): every step of the job waits for it";
  } else if (has("rank lag")) {
    out << "check " << who("rank_lag", "the lagging rank") << "'s connection to the monitor and its "
           "reporter's spool: its reports reach the monitor late, so what is shown of it is behind";
  } else {
    out << "lower the learning rate, or clip the gradient norm";
  }
  out << ".\n";
}

void Incident(std::ostringstream& out, uint64_t id, const std::vector<const v1::Event*>& events,
              const std::vector<v1::CommandRecord>& commands, const std::vector<v1::StepReport>& steps,
              uint64_t last_step) {
  uint64_t first = events.front()->step(), last = events.back()->step();
  std::vector<std::string> kinds;
  for (const auto* e : events) {
    if (std::find(kinds.begin(), kinds.end(), Plain(e->kind())) == kinds.end()) kinds.push_back(Plain(e->kind()));
  }
  out << "\nIncident " << id << ", steps " << first << "-" << last << ": ";
  for (size_t i = 0; i < kinds.size(); ++i) out << (i ? ", then " : "") << kinds[i];
  out << ".\n";
  std::string leader;
  for (const auto* e : events) {
    out << "  step " << e->step() << "  " << Plain(e->kind()) << ": " << e->message();
    if (!e->first_layer().empty()) {
      out << "; led by " << e->first_layer();
      if (leader.empty()) leader = e->first_layer();
    }
    out << "\n";
  }
  std::vector<std::string> done;
  for (const auto* e : events) {  // gated vetoes: the hub appends the verdict to its event
    size_t at = e->message().find(kGatedMark);
    if (at != std::string::npos) done.push_back(e->message().substr(at + std::strlen(kGatedMark)));
  }
  uint64_t until = last + 100;
  for (const auto& c : commands) {
    if (c.issued_at_step() + 1 >= first && c.issued_at_step() <= until) done.push_back(Action(c));
  }
  out << "  Done: " << (done.empty() ? "nothing (observe mode, or no action applies)" : "");
  for (size_t i = 0; i < done.size(); ++i) out << (i ? "; " : "") << done[i];
  out << ".\n";

  Window before = Stats(steps, first > 50 ? first - 50 : 1, first - 1);
  Window end = Stats(steps, last_step > 20 ? last_step - 19 : 1, last_step);
  if (before.n && end.n) {
    // A dead network's loss can sit near where it started: its gradient tells.
    bool dead = before.norm_median > 0 && end.norm_median < 0.01 * before.norm_median;
    bool recovered = end.loss <= before.loss * 1.5 + 0.02 && !dead;
    out << "  Effect: loss " << Fmt(before.loss) << " before step " << first << ", " << Fmt(end.loss)
        << " over the last " << end.n << " steps: "
        << (recovered ? "recovered" : dead ? "not recovered (the gradient is gone)" : "not recovered") << ".\n";
  }
  Suggest(out, kinds, before, first, leader, events);
}

}  // namespace

std::string ExplainRun(const v1::Run& run, const std::vector<v1::Event>& events,
                       const std::vector<v1::CommandRecord>& commands,
                       const std::vector<v1::StepReport>& steps) {
  std::ostringstream out;
  out << "Run " << run.run_id() << ": " << StateName(run.state()) << ", " << run.steps() << " steps stored (last "
      << run.last_step() << "), mode " << ModeName(run.mode()) << ", last loss " << Fmt(run.last_loss()) << ".\n";
  if (events.empty()) {
    out << "No anomalies detected.\n";
    return out.str();
  }
  std::map<uint64_t, std::vector<const v1::Event*>> incidents;
  for (const auto& e : events) incidents[e.incident_id()].push_back(&e);
  for (const auto& [id, list] : incidents) Incident(out, id, list, commands, steps, run.last_step());
  return out.str();
}

}  // namespace gradwatch::monitor
