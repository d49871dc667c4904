#include "watch.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iostream>
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

  void Update(const v1::RunUpdate& u) {
    if (u.has_run()) {
      run_ = u.run();
      if (!tty_) out_ << "run " << run_.run_id() << " " << v1::StateName(run_.state()) << "\n";
    } else if (u.has_step()) {
      last_ = u.step();
      norms_.push_back(last_.grad_norm());
      if (norms_.size() > 40) norms_.erase(norms_.begin());
      if (!tty_ && last_.step() % 25 == 0) out_ << StepLine() << "\n";
    } else if (u.has_event()) {
      Remember("step " + std::to_string(u.event().step()) + "  " +
               (u.event().severity() == v1::SEVERITY_CRITICAL ? "critical " : "warning ") + u.event().kind() +
               ": " + u.event().message());
    } else if (u.has_command()) {
      const auto& c = u.command();
      Remember(c.command().id() + "  " + v1::ActionName(c.command()) + " by " + c.command().issued_by() +
               (c.has_ack() ? ", applied at step " + std::to_string(c.ack().applied_at_step()) : ", sent"));
    }
    if (tty_) Draw();
    out_.flush();
  }

 private:
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
};

}  // namespace

Followed FollowRun(Client& c, const std::string& run_id, std::ostream& out, bool tty) {
  grpc::ClientContext ctx;
  c.Authorize(ctx);
  v1::WatchRunRequest req;
  req.set_run_id(run_id);
  auto reader = c.stub().WatchRun(&ctx, req);
  WatchView view(out, tty);
  Followed f;
  v1::RunUpdate update;
  while (reader->Read(&update)) {
    f.updates = true;
    if (update.has_run()) f.state = update.run().state();
    view.Update(update);
  }
  f.status = reader->Finish();
  return f;
}

int Watch(Client& c, const Globals& g, const std::string& run_id, std::ostream& err) {
  Followed f = FollowRun(c, run_id, *g.view_out, g.view_out_tty);
  if (!f.status.ok()) throw Failure{"watch: " + c.Explain(f.status)};
  err << "gradwatch: run " << run_id << " ended: " << v1::StateName(f.state) << "\n";
  return f.state == v1::RUN_STATE_FAILED ? 1 : 0;
}

}  // namespace gradwatch::cli
