#include "gradwatch/cli/cli.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <iostream>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <fstream>
#include <sstream>
#include <thread>
#include <type_traits>

#include "gradwatch/detect/replay.h"
#include "gradwatch/reporter/channel.h"
#include "gradwatch/reporter/reporter.h"
#include "gradwatch/reporter/spool.h"
#include "gradwatch/v1/jobs.grpc.pb.h"
#include "gradwatch/v1/runs.grpc.pb.h"
#include "names.h"

namespace gradwatch::cli {
namespace {

using nlohmann::json;

struct Globals {
  std::string server = "127.0.0.1:7070";
  std::string token;
  reporter::TlsFiles tls;
  bool json_output = false;
  int timeout_ms = 10'000;
};

// A failed call, already explained; becomes exit code 1.
struct Failure {
  std::string message;
};



std::string Num(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

class Client {
 public:
  explicit Client(const Globals& g) : g_(g) {
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    try {
      credentials = reporter::ChannelCredentials(g.tls);
    } catch (const std::exception& e) {
      throw Failure{e.what()};
    }
    auto channel = grpc::CreateChannel(g.server, credentials);
    stub_ = v1::Runs::NewStub(channel);
    jobs_ = v1::Jobs::NewStub(channel);
  }

  // One unary call of the Runs or the Jobs service; throws Failure with `what` and the
  // reason (and what to check when the monitor cannot be reached).
  template <typename Req, typename Resp, typename Stub>
  Resp Call(grpc::Status (Stub::*fn)(grpc::ClientContext*, const Req&, Resp*), const Req& req, const char* what,
            int timeout_ms = 0) {
    Resp resp;
    grpc::Status status = TryCall(fn, req, &resp, timeout_ms);
    if (!status.ok()) throw Failure{std::string(what) + ": " + Explain(status)};
    return resp;
  }

  // The same, returning the status instead of throwing.
  template <typename Req, typename Resp, typename Stub>
  grpc::Status TryCall(grpc::Status (Stub::*fn)(grpc::ClientContext*, const Req&, Resp*), const Req& req, Resp* resp,
                       int timeout_ms = 0) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(timeout_ms ? timeout_ms : g_.timeout_ms));
    Authorize(ctx);
    if constexpr (std::is_same_v<Stub, v1::Jobs::Stub>) {
      return (jobs_.get()->*fn)(&ctx, req, resp);
    } else {
      return (stub_.get()->*fn)(&ctx, req, resp);
    }
  }

  std::string Explain(const grpc::Status& status) const {
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return status.error_message();
    return "cannot reach gradwatchd at " + g_.server + " (" + status.error_message() +
           "); is it running? set --server or GRADWATCH_SERVER" +
           (g_.tls.enabled() ? "" : "; if it uses TLS, pass --tls-ca");
  }

  v1::Runs::Stub& stub() { return *stub_; }
  v1::Jobs::Stub& jobs() { return *jobs_; }
  void Authorize(grpc::ClientContext& ctx) const {
    if (!g_.token.empty()) ctx.AddMetadata("authorization", "Bearer " + g_.token);
  }

 private:
  const Globals& g_;
  std::unique_ptr<v1::Runs::Stub> stub_;
  std::unique_ptr<v1::Jobs::Stub> jobs_;
};

json RunJson(const v1::Run& r) {
  return {{"run_id", r.run_id()},     {"state", v1::StateName(r.state())}, {"mode", v1::ModeName(r.mode())},
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

const char* SeverityName(v1::Severity s) {
  return s == v1::SEVERITY_CRITICAL ? "critical" : s == v1::SEVERITY_WARNING ? "warning" : "info";
}

void PrintEvents(const v1::ListEventsResponse& resp, const Globals& g, std::ostream& out) {
  for (const auto& e : resp.events()) {
    if (g.json_output) {
      out << json{{"step", e.step()}, {"kind", e.kind()}, {"severity", SeverityName(e.severity())},
                  {"message", e.message()}, {"value", e.value()}, {"first_layer", e.first_layer()},
                  {"incident", e.incident_id()}}
                 .dump()
          << "\n";
    } else {
      out << "step " << e.step() << "  " << SeverityName(e.severity()) << "  " << e.kind() << "  "
          << e.message() << "\n";
    }
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

struct ReplayOptions {
  std::string file, format = "auto", run_id;
  bool offline = false;
  double loss_bound = 0;
  std::vector<std::string> thresholds;  // key=value
};

detect::CsvFormat ParseFormat(const std::string& f) {
  return f == "gradwatch-csv" ? detect::CsvFormat::kGradwatch
         : f == "keras-csv" ? detect::CsvFormat::kKeras : detect::CsvFormat::kAuto;
}

// key=value overrides; throws Failure naming the bad one.
std::map<std::string, double> ParseThresholds(const std::vector<std::string>& items) {
  std::map<std::string, double> out;
  for (const auto& item : items) {
    auto eq = item.find('=');
    char* end = nullptr;
    double v = eq == std::string::npos ? 0 : std::strtod(item.c_str() + eq + 1, &end);
    if (eq == std::string::npos || end == item.c_str() + eq + 1 || *end != '\0') {
      throw Failure{"--threshold \"" + item + "\": expected NAME=NUMBER, e.g. spike_z_critical=6"};
    }
    out[item.substr(0, eq)] = v;
  }
  return out;
}

void PrintDetectEvents(const std::vector<detect::Event>& events, const Globals& g, std::ostream& out) {
  for (const auto& e : events) {
    if (g.json_output) {
      out << json{{"step", e.step}, {"kind", detect::ToString(e.kind)}, {"severity", detect::ToString(e.severity)},
                  {"message", e.message}, {"value", std::isfinite(e.value) ? json(e.value) : json(nullptr)},
                  {"first_layer", e.first_layer}, {"incident", e.incident_id}}
                 .dump()
          << "\n";
    } else {
      out << "step " << e.step << "  " << detect::ToString(e.severity) << "  " << detect::ToString(e.kind)
          << "  " << e.message << "\n";
    }
  }
}

// Streams the records into a running monitor as a new run (observe mode).
// Streams `messages` (steps and evals) into the monitor as the run `hello` names, and
// waits until every one is stored. Throws Failure when the monitor does not store them.
void Deliver(const v1::Hello& hello, const std::vector<v1::TrainerMessage>& messages, const Globals& g) {
  reporter::ReporterOptions ro;
  ro.address = g.server;
  ro.token = g.token;
  ro.tls = g.tls;
  ro.log_warnings = false;
  ro.max_buffered = messages.size() + 1;
  reporter::Reporter rep(ro, hello);
  for (const auto& m : messages) {
    if (m.has_step()) rep.Report(m.step());
    if (m.has_eval()) rep.Report(m.eval());
  }
  bool stored = rep.Flush(std::chrono::milliseconds(g.timeout_ms));
  std::string error = rep.stats().last_error;
  rep.Close(std::chrono::seconds(2));
  if (!stored) {
    throw Failure{"replay: the monitor at " + g.server + " did not store the run " + hello.run_id() +
                  (error.empty() ? std::string(" in time") : ": " + error)};
  }
}

// Streams the records into a running monitor as a new run (observe mode).
std::string ReplayOnline(const std::vector<detect::ReplayRecord>& records, const ReplayOptions& o,
                         const std::map<std::string, double>& thresholds, const Globals& g, std::ostream& err) {
  std::string run_id = o.run_id;
  if (run_id.empty()) run_id = "replay-" + std::to_string(std::time(nullptr)) + "-" + std::to_string(::getpid());
  v1::Hello hello;
  hello.set_run_id(run_id);
  hello.set_mode(v1::MODE_OBSERVE);
  hello.mutable_config()->set_loss_upper_bound(o.loss_bound);
  hello.mutable_config()->set_model("replay of " + o.file);
  hello.mutable_config()->set_total_steps(records.empty() ? 0 : records.back().step.step);
  for (const auto& [k, v] : thresholds) (*hello.mutable_config()->mutable_thresholds())[k] = v;
  std::vector<v1::TrainerMessage> messages;
  auto opt = [](double v, auto set) {
    if (!std::isnan(v)) set(v);
  };
  for (const auto& r : records) {
    v1::StepReport* s = messages.emplace_back().mutable_step();
    s->set_step(r.step.step);
    s->set_epoch(r.step.epoch);
    s->set_loss(r.step.loss);
    if (r.step.has_grad_norm) s->set_grad_norm(r.step.grad_norm);
    opt(r.step.learning_rate, [&](double v) { s->set_learning_rate(v); });
    opt(r.step.jaccard_soft, [&](double v) { s->set_jaccard_soft(v); });
    opt(r.step.jaccard_hard, [&](double v) { s->set_jaccard_hard(v); });
    opt(r.step.accuracy, [&](double v) { s->set_accuracy(v); });
    if (!r.eval) continue;
    v1::EvalReport* e = messages.emplace_back().mutable_eval();
    e->set_step(r.eval->step);
    e->set_loss(r.eval->loss);
    opt(r.eval->jaccard_soft, [&](double v) { e->set_jaccard_soft(v); });
    opt(r.eval->jaccard_hard, [&](double v) { e->set_jaccard_hard(v); });
    opt(r.eval->accuracy, [&](double v) { e->set_accuracy(v); });
  }
  Deliver(hello, messages, g);
  err << "gradwatch: replayed " << records.size() << " rows of " << o.file << " as run " << run_id << "\n";
  return run_id;
}

// Delivers a trainer's spool (reporter/spool.h) to the monitor under the run's own id.
int ReplaySpool(const ReplayOptions& o, const Globals& g, std::ostream& out, std::ostream& err) {
  reporter::SpoolContents spool = reporter::Spool::Read(o.file);
  if (!spool.error.empty()) throw Failure{spool.error};
  if (spool.skipped_bytes > 0) {
    err << "gradwatch: " << o.file << ": the last " << spool.skipped_bytes
        << " bytes are torn or corrupt and were not read\n";
  }
  v1::Hello hello = spool.messages.front().hello();
  if (!o.run_id.empty()) hello.set_run_id(o.run_id);
  hello.set_mode(v1::MODE_OBSERVE);  // the run is over: nothing to steer
  spool.messages.erase(spool.messages.begin());
  Deliver(hello, spool.messages, g);
  size_t steps = std::count_if(spool.messages.begin(), spool.messages.end(), [](auto& m) { return m.has_step(); });
  if (g.json_output) {
    out << json{{"run_id", hello.run_id()}, {"steps", steps}, {"messages", spool.messages.size()}}.dump() << "\n";
  } else {
    out << "delivered " << steps << " steps of run " << hello.run_id() << " from " << o.file << "\n";
  }
  return 0;
}

int Replay(const ReplayOptions& o, const Globals& g, std::ostream& out, std::ostream& err) {
  if (reporter::Spool::IsSpool(o.file)) return ReplaySpool(o, g, out, err);
  auto thresholds = ParseThresholds(o.thresholds);
  detect::ParseResult parsed = detect::ReadCsvFile(o.file, ParseFormat(o.format));
  if (!parsed.ok()) throw Failure{parsed.error};
  if (o.offline) {
    detect::Thresholds t;
    std::string bad = t.Apply(thresholds);
    if (!bad.empty()) throw Failure{"--threshold: " + bad};
    detect::RunInfo info;
    info.loss_upper_bound = o.loss_bound;
    PrintDetectEvents(detect::ReplayOffline(parsed.records, info, t), g, out);
    return 0;
  }
  std::string run_id = ReplayOnline(parsed.records, o, thresholds, g, err);
  Client c(g);
  v1::ListEventsRequest req;
  req.set_run_id(run_id);
  PrintEvents(c.Call<v1::ListEventsRequest, v1::ListEventsResponse>(&v1::Runs::Stub::ListEvents, req, "events"), g, out);
  return 0;
}

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
  void Remember(const std::string& line) {
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

int Watch(Client& c, const Globals& g, const std::string& run_id, std::ostream& out, std::ostream& err) {
  grpc::ClientContext ctx;
  c.Authorize(ctx);
  v1::WatchRunRequest req;
  req.set_run_id(run_id);
  auto reader = c.stub().WatchRun(&ctx, req);
  WatchView view(out, &out == &std::cout && ::isatty(STDOUT_FILENO));
  v1::RunUpdate update;
  v1::RunState state = v1::RUN_STATE_UNSPECIFIED;
  while (reader->Read(&update)) {
    if (update.has_run()) state = update.run().state();
    view.Update(update);
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) throw Failure{"watch: " + status.error_message()};
  err << "gradwatch: run " << run_id << " ended: " << v1::StateName(state) << "\n";
  return state == v1::RUN_STATE_FAILED ? 1 : 0;
}


json JobJson(const v1::Job& j) {
  return {{"job_id", j.job_id()},   {"run_id", j.run_id()},
          {"state", v1::JobStateName(j.state())}, {"exit_code", j.exit_code()},
          {"error", j.error()},     {"pid", j.pid()},
          {"created_unix_millis", j.created_unix_millis()}, {"started_unix_millis", j.started_unix_millis()},
          {"ended_unix_millis", j.ended_unix_millis()}};
}

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

// The config a launch sends: the CONFIG file's object with the flags' fields over it.
struct LaunchOptions {
  std::string config_file, run_id;
  std::vector<std::string> sets;  // FIELD=JSON, e.g. steps=200, scenario="seed" (a bare word is a string)
  bool detach = false;
};

std::string LaunchConfig(const LaunchOptions& o) {
  json config = json::object();
  if (!o.config_file.empty()) {
    std::ifstream in(o.config_file);
    std::stringstream text;
    text << in.rdbuf();
    config = json::parse(text.str(), nullptr, false, /*ignore_comments=*/true);
    if (!in || config.is_discarded() || !config.is_object()) {
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
  WatchView view(err, &err == &std::cerr && ::isatty(STDERR_FILENO));
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
      grpc::ClientContext ctx;
      c.Authorize(ctx);
      v1::WatchRunRequest req;
      req.set_run_id(job.run_id());
      auto reader = c.stub().WatchRun(&ctx, req);
      v1::RunUpdate update;
      while (reader->Read(&update)) {
        watched = true;
        view.Update(update);
      }
      grpc::Status status = reader->Finish();
      if (!status.ok() && status.error_code() != grpc::StatusCode::NOT_FOUND) {
        throw Failure{"watch: " + c.Explain(status)};
      }
      if (watched) continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
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

// Stops a launched job (SIGTERM, then SIGKILL after the grace period) and waits for it to
// end. Returns nullopt when RUN is not a launched job.
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

}  // namespace

int RunCli(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Globals g;
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
            << "\nevents     " << r.events() << "\nincidents  " << r.incidents() << "\nmodel      "
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
      return Watch(c, g, run_id, out, err);
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
