// The watch verb: FollowRun and its view.
#include "watch.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

#include "gradwatch/common/printable.h"
#include "names.h"

namespace gradwatch::cli {
namespace {

// The live terminal view of `gradwatch watch`: state, progress, loss, Jaccard, a grad-norm
// sparkline, clipping, learning rate and the latest events and commands. Redrawn in place
// on a terminal; plain lines (every 25th step, every event and command) otherwise.
class WatchView {
 public:
  WatchView(std::ostream& out, bool tty) : out_(out), tty_(tty) {}

  // Takes in an update; on a terminal, redraws unless `redraw` is false (Close draws).
  void Update(const v1::RunUpdate& u, bool redraw = true) {
    if (u.has_run()) {
      run_ = u.run();
      if (!tty_) out_ << "run " << run_.run_id() << " " << v1::StateName(run_.state()) << "\n";
    } else if (u.has_step()) {
      last_ = u.step();
      norms_.push_back(last_.grad_norm());
      if (norms_.size() > 40) norms_.erase(norms_.begin());
      if (!tty_ && last_.step() % 25 == 0) PrintStepLine();
    } else if (u.has_event()) {
      Remember("step " + std::to_string(u.event().step()) + "  " +
               (u.event().severity() == v1::SEVERITY_CRITICAL ? "critical " : "warning ") + u.event().kind() +
               ": " + u.event().message());
    } else if (u.has_command()) {
      const auto& c = u.command();
      Remember(c.command().id() + "  " + v1::ActionName(c.command()) + " by " + c.command().issued_by() +
               (c.has_ack() ? ", applied at step " + std::to_string(c.ack().applied_at_step()) : ", sent"));
    }
    if (tty_ && redraw) Draw();
    out_.flush();
  }

  // The stream ended: the view as it ended; plain lines end with the last step, whatever
  // its number.
  void Close() {
    if (tty_) {
      if (!run_.run_id().empty()) Draw();  // else nothing arrived (no such run yet)
    } else if (last_.step() != 0 && printed_step_ != last_.step()) {
      PrintStepLine();
    }
    out_.flush();
  }

 private:
  void PrintStepLine() {
    out_ << StepLine() << "\n";
    printed_step_ = last_.step();
  }

  void Remember(const std::string& text) {
    std::string line = Printable(text);  // event messages and layer names come from the run
    recent_.push_back(line);
    if (recent_.size() > 10) recent_.erase(recent_.begin());
    if (!tty_) out_ << line << "\n";
  }

  std::string StepLine() const {
    std::ostringstream s;
    s << "step " << last_.step() << "  loss " << Num(last_.loss()) << "  jaccard "
      << (last_.has_jaccard_hard() ? Num(last_.jaccard_hard()) : "–") << "  grad_norm " << Num(last_.grad_norm())
      << "  lr " << Num(last_.learning_rate()) << "  clipping "
      << (last_.clipping().kind() == v1::Clipping::KIND_OFF ? "off" : Num(last_.clipping().threshold()));
    return s.str();
  }

  // Eight levels on a log scale over the window.
  std::string Sparkline() const {
    static const char* bars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    double lo = 1e300, hi = -1e300;
    for (double v : norms_) {
      if (v > 0 && std::isfinite(v)) lo = std::min(lo, std::log(v)), hi = std::max(hi, std::log(v));
    }
    std::string out;
    for (double v : norms_) {
      if (!(v > 0) || !std::isfinite(v)) {
        out += v == 0 ? "_" : "!";
        continue;
      }
      int k = hi > lo ? static_cast<int>((std::log(v) - lo) / (hi - lo) * 7.999) : 0;
      out += bars[std::clamp(k, 0, 7)];
    }
    return out;
  }

  void Draw() {
    uint64_t total = run_.config().total_steps();
    std::ostringstream s;
    s << "\033[H\033[2J" << "run " << run_.run_id() << "  " << v1::StateName(run_.state()) << "  mode "
      << v1::ModeName(run_.mode()) << "\n";
    s << "step " << last_.step();
    if (total) {
      int filled = static_cast<int>(30.0 * std::min<uint64_t>(last_.step(), total) / total);
      s << " / " << total << "  [" << std::string(filled, '#') << std::string(30 - filled, '.') << "] "
        << 100 * std::min<uint64_t>(last_.step(), total) / total << "%";
    }
    s << "\n" << StepLine().substr(StepLine().find("loss")) << "\n";
    s << "grad norm  " << Sparkline() << "  (last " << norms_.size() << " steps, log scale)\n\n";
    s << "events and commands:\n";
    for (const auto& line : recent_) s << "  " << line << "\n";
    out_ << s.str();
  }

  std::ostream& out_;
  bool tty_;
  v1::Run run_;
  v1::StepReport last_;
  std::vector<double> norms_;
  std::vector<std::string> recent_;
  uint64_t printed_step_ = 0;
};

// A run that ended before the watch began: its events and its last step, as updates
// (FollowRun's Close shows them).
void ShowEnded(Client& c, const v1::Run& run, WatchView& view) {
  v1::RunUpdate update;
  v1::ListEventsRequest events;
  events.set_run_id(run.run_id());
  auto listed = c.Call<v1::ListEventsRequest, v1::ListEventsResponse>(&v1::Runs::Stub::ListEvents, events, "watch");
  for (const auto& e : listed.events()) {
    *update.mutable_event() = e;
    view.Update(update, /*redraw=*/false);
  }
  if (run.last_step() == 0) return;
  v1::ListStepsRequest steps;
  steps.set_run_id(run.run_id());
  steps.set_after_step(run.last_step() - 1);
  steps.set_limit(1);
  auto last = c.Call<v1::ListStepsRequest, v1::ListStepsResponse>(&v1::Runs::Stub::ListSteps, steps, "watch");
  for (const auto& s : last.steps()) {
    *update.mutable_step() = s;
    view.Update(update, /*redraw=*/false);
  }
}

bool Ended(v1::RunState state) {
  return state == v1::RUN_STATE_FINISHED || state == v1::RUN_STATE_STOPPED || state == v1::RUN_STATE_FAILED;
}

int Watch(Context& ctx, const std::string& run_id) {
  Followed f = FollowRun(ctx.client(), run_id, *ctx.g.view_out, ctx.g.view_out_tty);
  if (!f.status.ok()) throw Failure{"watch: " + ctx.client().Explain(f.status)};
  ctx.err << "gradwatch: run " << run_id << " ended: " << v1::StateName(f.state) << "\n";
  return f.state == v1::RUN_STATE_FAILED ? 1 : 0;
}

}  // namespace

Followed FollowRun(Client& c, const std::string& run_id, std::ostream& out, bool tty) {
  grpc::ClientContext ctx;
  c.Authorize(ctx);
  v1::WatchRunRequest req;
  req.set_run_id(run_id);
  auto reader = c.stub().WatchRun(&ctx, req);
  WatchView view(out, tty);
  Followed f;
  v1::Run snapshot;
  bool live = false;  // anything but state snapshots arrived
  v1::RunUpdate update;
  while (reader->Read(&update)) {
    f.updates = true;
    if (update.has_run()) {
      f.state = update.run().state();
      snapshot = update.run();
    } else {
      live = true;
    }
    view.Update(update);
  }
  f.status = reader->Finish();
  if (f.status.ok() && !live && Ended(f.state)) ShowEnded(c, snapshot, view);
  view.Close();
  return f;
}

void AddWatchVerb(Verbs& verbs) {
  auto run_id = std::make_shared<std::string>();
  verbs.Add("watch", "follow a run live until it ends (a view on a terminal, lines otherwise)",
            [run_id](Context& c) { return Watch(c, *run_id); })
      ->add_option("RUN", *run_id, "run id")->required();
}

}  // namespace gradwatch::cli
