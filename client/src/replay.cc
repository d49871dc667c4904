#include "replay.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "gradwatch/detect/replay.h"
#include "gradwatch/reporter/reporter.h"
#include "gradwatch/reporter/spool.h"
#include "names.h"

namespace gradwatch::cli {
namespace {

using nlohmann::json;

detect::CsvFormat ParseFormat(const std::string& f) {
  return f == "gradwatch-csv" ? detect::CsvFormat::kGradwatch
         : f == "keras-csv" ? detect::CsvFormat::kKeras : detect::CsvFormat::kAuto;
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

}  // namespace

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

}  // namespace gradwatch::cli
