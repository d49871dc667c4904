// The text Printer: tables sized to their contents, "name  value" blocks and one line per
// event or command, for a person at a terminal.
#include <algorithm>
#include <cctype>
#include <ctime>
#include <iomanip>
#include <map>
#include <vector>

#include "client.h"
#include "names.h"
#include "printer.h"

namespace gradwatch::cli {
namespace {

// "defaults", or the overrides as NAME=VALUE, sorted.
std::string Overrides(const google::protobuf::Map<std::string, double>& m) {
  std::map<std::string, double> sorted(m.begin(), m.end());
  std::string out;
  for (const auto& [k, v] : sorted) out += (out.empty() ? "" : ", ") + k + "=" + Num(v);
  return out.empty() ? "defaults" : out;
}

// Local time to the minute, "2025-01-31 14:05"; "-" for 0 (not known).
std::string LocalTime(int64_t unix_millis) {
  if (unix_millis <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_millis / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

// The width of a column holding `header` and each of `cells`, with two spaces after it.
template <typename Items, typename Cell>
int ColumnWidth(const char* header, const Items& items, Cell cell) {
  size_t widest = std::char_traits<char>::length(header);
  for (const auto& item : items) widest = std::max(widest, cell(item).size());
  return static_cast<int>(widest + 2);
}

class TextPrinter final : public Printer {
 public:
  explicit TextPrinter(std::ostream& out) : out_(out) {}

  void Runs(const std::vector<v1::Run>& runs) override {
    int id = ColumnWidth("RUN", runs, [](const v1::Run& r) -> const std::string& { return r.run_id(); });
    out_ << std::left << std::setw(id) << "RUN" << std::setw(18) << "STARTED" << std::setw(14) << "STATE"
         << std::setw(9) << "MODE" << std::setw(10) << "STEPS" << std::setw(12) << "LOSS" << std::setw(12)
         << "GRAD_NORM" << "EVENTS\n";
    for (const auto& r : runs) {
      out_ << std::setw(id) << r.run_id() << std::setw(18) << LocalTime(r.started_unix_millis()) << std::setw(14)
           << v1::StateName(r.state()) << std::setw(9) << v1::ModeName(r.mode()) << std::setw(10) << r.steps()
           << std::setw(12) << Num(r.last_loss()) << std::setw(12) << Num(r.last_grad_norm()) << r.events()
           << "\n";
    }
  }

  void Run(const std::string& run_id, const v1::Run* r, const v1::Job* job) override {
    if (!r) {
      out_ << "run        " << run_id << "\n";
    } else {
      RunFields(*r);
    }
    if (job) JobFields(*job);
  }

  void Events(const Repeated<v1::Event>& events) override {
    for (const auto& e : events) {
      out_ << "step " << e.step() << "  " << SeverityName(e.severity()) << "  " << e.kind();
      if (e.has_rank()) out_ << "  rank " << e.rank();
      out_ << "  " << e.message() << "\n";
    }
  }

  void Commands(const Repeated<v1::CommandRecord>& commands) override {
    for (const auto& r : commands) {
      const auto& e = r.effect();
      out_ << r.command().id() << "  " << v1::ActionName(r.command()) << "  by " << r.command().issued_by()
           << "  step " << r.issued_at_step() << " -> "
           << (r.has_ack() ? "applied at " + std::to_string(r.ack().applied_at_step()) : "not acknowledged")
           << RankAcks(r)
           << "  loss " << Num(e.loss_before()) << " -> " << Num(e.loss_after()) << ", grad norm "
           << Num(e.grad_norm_before()) << " -> " << Num(e.grad_norm_after()) << "  (" << r.command().reason()
           << ")\n";
    }
  }

  void CommandOutcome(const v1::SendCommandResponse& resp) override {
    const auto& rec = resp.record();
    if (!resp.acknowledged() || rec.ack().result() != v1::CommandAck::RESULT_APPLIED) return;
    out_ << rec.command().id() << " applied at step " << rec.ack().applied_at_step();
    if (!rec.ack().detail().empty()) out_ << " (" << rec.ack().detail() << ")";
    out_ << "\n";
  }

  void Policy(const v1::Run& r) override {
    out_ << "run        " << r.run_id() << "\nthresholds " << Overrides(r.config().thresholds())
         << "\npolicy     " << Overrides(r.config().policy()) << "\n";
  }

  void Explanation(const std::string&, const std::string& text) override { out_ << text; }

  // DETAIL: why an ended job failed, or what its scheduler says of a live one.
  void Jobs(const Repeated<v1::Job>& jobs) override {
    int id = ColumnWidth("JOB", jobs, [](const v1::Job& j) -> const std::string& { return j.job_id(); });
    std::vector<std::string> where;
    size_t where_width = std::string("LAUNCHER").size();
    for (const auto& j : jobs) {
      where.push_back(Where(j));
      where_width = std::max(where_width, where.back().size());
    }
    const int wide = static_cast<int>(where_width) + 2;
    out_ << std::left << std::setw(id) << "JOB" << std::setw(11) << "STATE" << std::setw(6) << "EXIT"
         << std::setw(wide) << "LAUNCHER" << "DETAIL\n";
    for (int i = 0; i < jobs.size(); ++i) {
      const v1::Job& j = jobs[i];
      const bool ended = v1::JobEnded(j.state());
      out_ << std::setw(id) << j.job_id() << std::setw(11) << v1::JobStateName(j.state()) << std::setw(6)
           << (ended ? std::to_string(j.exit_code()) : "-") << std::setw(wide) << where[i]
           << (ended ? j.error() : j.scheduler_state()).substr(0, 80) << "\n";
    }
  }

  void Launched(const v1::Job& job, bool) override {
    out_ << job.run_id() << "\n";
    out_.flush();  // a script reads the run id while the job runs
  }
  void LaunchEnded(const v1::Job&) override {}
  void JobStopped(const v1::Job& job) override { out_ << JobOutcome(job) << "\n"; }

  void SpoolDelivered(const std::string& run_id, size_t steps, size_t, const std::string& file) override {
    out_ << "delivered " << steps << " steps of run " << run_id << " from " << file << "\n";
  }

  void ReplayTotals(size_t count, const std::string& unit, size_t events) override {
    out_ << count << " " << unit << ", " << events << (events == 1 ? " event\n" : " events\n");
  }

 private:
  void RunFields(const v1::Run& r) {
    out_ << "run        " << r.run_id() << "\nstate      " << v1::StateName(r.state()) << "\nmode       "
         << v1::ModeName(r.mode()) << "\nstarted    " << LocalTime(r.started_unix_millis()) << "\nsteps      "
         << r.steps() << " (last " << r.last_step();
    if (r.config().total_steps()) out_ << " of " << r.config().total_steps();
    out_ << ")\nloss       " << Num(r.last_loss()) << "\ngrad norm  " << Num(r.last_grad_norm())
         << "\npolicy     " << Overrides(r.config().policy()) << "\nthresholds " << Overrides(r.config().thresholds())
         << "\nevents     " << r.events() << "\nincidents  " << r.incidents() << "\nmodel      "
         << r.config().model() << "\noptimizer  " << r.config().optimizer() << "\ndevice     " << r.device() << "\n";
    if (r.world_size() >= 2) RankRows(r);
  }

  // Data parallel: one line per rank, where its stream is and what it last said.
  void RankRows(const v1::Run& r) {
    out_ << "ranks      " << r.world_size() << "\n  RANK  STREAM        LAST STEP  PHASE       HOST\n";
    for (const auto& k : r.ranks()) {
      const char* stream = k.connected() ? "connected" : k.finished() ? "finished" : "disconnected";
      std::string phase = k.heartbeat().phase() == v1::Heartbeat::PHASE_UNSPECIFIED
                              ? "-"
                              : v1::Heartbeat::Phase_Name(k.heartbeat().phase()).substr(6);  // drop "PHASE_"
      for (char& c : phase) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out_ << "  " << std::left << std::setw(6) << k.rank() << std::setw(14) << stream << std::setw(11)
           << k.last_step() << std::setw(12) << phase << k.host() << std::right << "\n";
    }
  }

  // Data parallel: " on 2/2 ranks" when every rank applied it at the same step, else each
  // rank's step.
  static std::string RankAcks(const v1::CommandRecord& r) {
    if (r.rank_acks_size() == 0) return "";
    bool same = true;
    for (const auto& a : r.rank_acks()) same = same && a.applied_at_step() == r.ack().applied_at_step();
    if (same) return " on " + std::to_string(r.rank_acks_size()) + " rank(s)";
    std::string out = " (";
    for (const auto& a : r.rank_acks()) {
      out += (out.size() > 2 ? ", " : "") + std::string("rank ") + std::to_string(a.rank()) + " at " +
             std::to_string(a.applied_at_step());
    }
    return out + ")";
  }

  void JobFields(const v1::Job& job) {
    out_ << "job        " << v1::JobStateName(job.state());
    if (v1::JobEnded(job.state()) && job.exit_code() != -1) out_ << " (exit code " << job.exit_code() << ")";
    if (job.pid()) out_ << " (pid " << job.pid() << ")";
    out_ << "\n";
    if (!job.launcher().empty()) out_ << "launcher   " << Where(job) << "\n";
    if (!job.scheduler_state().empty()) out_ << "scheduler  " << job.scheduler_state() << "\n";
    if (!job.error().empty()) out_ << "error      " << job.error() << "\n";
  }

  // "local", or the launcher and the scheduler's job id: "slurm job 1234".
  static std::string Where(const v1::Job& j) {
    std::string where = j.launcher().empty() ? "local" : j.launcher();
    return j.scheduler_job_id().empty() ? where : where + " job " + j.scheduler_job_id();
  }

  std::ostream& out_;
};

}  // namespace

std::unique_ptr<Printer> MakeTextPrinter(std::ostream& out) { return std::make_unique<TextPrinter>(out); }

std::string JobOutcome(const v1::Job& j) {
  std::string out = "job " + j.job_id() + " " + v1::JobStateName(j.state());
  if (v1::JobEnded(j.state()) && j.exit_code() != -1) out += " (exit code " + std::to_string(j.exit_code()) + ")";
  if (j.started_unix_millis() && j.ended_unix_millis()) {
    out += " after " + Num((j.ended_unix_millis() - j.started_unix_millis()) / 1000.0) + " s";
  }
  if (!j.error().empty()) out += ": " + j.error();
  return out;
}

const char* SeverityName(v1::Severity s) {
  return s == v1::SEVERITY_CRITICAL ? "critical" : s == v1::SEVERITY_WARNING ? "warning" : "info";
}

}  // namespace gradwatch::cli
