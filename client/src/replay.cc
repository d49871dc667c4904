// The replay verb.
#include "replay.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>

#include "gradwatch/common/name_value.h"
#include "gradwatch/reporter/reporter.h"
#include "gradwatch/reporter/spool.h"

namespace gradwatch::cli {
namespace {

struct ReplayOptions {
  std::string file, format = "auto", run_id;
  bool offline = false;
  double loss_bound = 0;
  std::vector<std::string> thresholds;  // NAME=VALUE
};

detect::CsvFormat ParseFormat(const std::string& f) {
  return f == "gradwatch-csv" ? detect::CsvFormat::kGradwatch
         : f == "keras-csv"   ? detect::CsvFormat::kKeras
                              : detect::CsvFormat::kAuto;
}

Repeated<v1::Event> ToProto(const std::vector<detect::Event>& events) {
  Repeated<v1::Event> out;
  for (const auto& d : events) {
    v1::Event* e = out.Add();
    e->set_step(d.step);
    e->set_kind(detect::ToString(d.kind));
    e->set_severity(d.severity == detect::Severity::kCritical ? v1::SEVERITY_CRITICAL : v1::SEVERITY_WARNING);
    e->set_message(d.message);
    e->set_value(d.value);
    for (const auto& layer : d.top_layers) e->add_top_layers(layer);
    e->set_first_layer(d.first_layer);
    e->set_incident_id(d.incident_id);
  }
  return out;
}

// Runs the records through this process's detectors and prints the events and totals.
int DetectHere(Context& ctx, const std::vector<detect::ReplayRecord>& records, detect::RunInfo info,
               std::map<std::string, double> thresholds, const ReplayOptions& o, const std::string& unit) {
  for (const auto& [k, v] : ParseThresholds(o.thresholds)) thresholds[k] = v;
  detect::Thresholds t;
  if (Status bad = t.Apply(thresholds); !bad.ok()) throw Failure{"--threshold: " + bad.message()};
  if (o.loss_bound > 0) info.loss_upper_bound = o.loss_bound;
  auto events = ToProto(detect::ReplayOffline(records, info, t));
  ctx.print.Events(events);
  ctx.print.ReplayTotals(records.size(), unit, static_cast<size_t>(events.size()));
  return 0;
}

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

// A CSV trace as the messages a trainer would have sent.
std::vector<v1::TrainerMessage> TraceMessages(const std::vector<detect::ReplayRecord>& records) {
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
    opt(r.step.update_ratio, [&](double v) { s->set_update_ratio(v); });
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
  return messages;
}

// A CSV trace into the monitor as a new run (observe mode); then the events it raised.
int ReplayOnline(Context& ctx, const std::vector<detect::ReplayRecord>& records, const ReplayOptions& o) {
  std::string run_id = o.run_id;
  if (run_id.empty()) run_id = "replay-" + std::to_string(std::time(nullptr)) + "-" + std::to_string(::getpid());
  v1::Hello hello;
  hello.set_run_id(run_id);
  hello.set_mode(v1::MODE_OBSERVE);
  hello.mutable_config()->set_loss_upper_bound(o.loss_bound);
  hello.mutable_config()->set_model("replay of " + o.file);
  hello.mutable_config()->set_total_steps(records.empty() ? 0 : records.back().step.step);
  for (const auto& [k, v] : ParseThresholds(o.thresholds)) (*hello.mutable_config()->mutable_thresholds())[k] = v;
  Deliver(hello, TraceMessages(records), ctx.g);
  ctx.err << "gradwatch: replayed " << records.size() << " rows of " << o.file << " as run " << run_id << "\n";
  v1::ListEventsRequest req;
  req.set_run_id(run_id);
  auto events =
      ctx.client().Call<v1::ListEventsRequest, v1::ListEventsResponse>(&v1::Runs::Stub::ListEvents, req, "events");
  ctx.print.Events(events.events());
  ctx.print.ReplayTotals(records.size(), "rows", static_cast<size_t>(events.events_size()));
  return 0;
}

// A trainer's spool (reporter/spool.h): through the detectors here, or delivered to the
// monitor under the run's own id.
int ReplaySpool(Context& ctx, const ReplayOptions& o) {
  reporter::SpoolContents spool = reporter::Spool::Read(o.file);
  if (!spool.error.empty()) throw Failure{spool.error};
  if (spool.skipped_bytes > 0) {
    ctx.err << "gradwatch: " << o.file << ": the last " << spool.skipped_bytes
            << " bytes are torn or corrupt and were not read\n";
  }
  if (spool.messages.empty() || !spool.messages.front().has_hello()) throw Failure{o.file + ": the spool has no hello"};
  v1::Hello hello = spool.messages.front().hello();
  spool.messages.erase(spool.messages.begin());
  if (o.offline) {
    detect::RunInfo info;
    info.layer_names.assign(hello.layer_names().begin(), hello.layer_names().end());
    info.loss_upper_bound = hello.config().loss_upper_bound();
    std::map<std::string, double> thresholds(hello.config().thresholds().begin(), hello.config().thresholds().end());
    return DetectHere(ctx, SpoolRecords(spool.messages), info, thresholds, o, "steps");
  }
  if (!o.run_id.empty()) hello.set_run_id(o.run_id);
  hello.set_mode(v1::MODE_OBSERVE);  // the run is over: nothing to steer
  Deliver(hello, spool.messages, ctx.g);
  size_t steps = std::count_if(spool.messages.begin(), spool.messages.end(), [](auto& m) { return m.has_step(); });
  ctx.print.SpoolDelivered(hello.run_id(), steps, spool.messages.size(), o.file);
  return 0;
}

int Replay(Context& ctx, const ReplayOptions& o) {
  if (reporter::Spool::IsSpool(o.file)) return ReplaySpool(ctx, o);
  ParseThresholds(o.thresholds);  // a malformed override fails before anything is read or sent
  detect::ParseResult parsed = detect::ReadCsvFile(o.file, ParseFormat(o.format));
  if (!parsed.ok()) throw Failure{parsed.error};
  if (o.offline) return DetectHere(ctx, parsed.records, detect::RunInfo{}, {}, o, "rows");
  return ReplayOnline(ctx, parsed.records, o);
}

}  // namespace

std::map<std::string, double> ParseThresholds(const std::vector<std::string>& items) {
  std::map<std::string, double> out;
  for (const auto& item : items) {
    std::string name;
    double v = 0;
    if (!ParseNameValue(item, &name, &v)) {
      throw Failure{ThresholdFlagError(item)};
    }
    out[name] = v;
  }
  return out;
}

std::vector<detect::ReplayRecord> SpoolRecords(const std::vector<v1::TrainerMessage>& messages) {
  std::vector<detect::ReplayRecord> records;
  for (const auto& m : messages) {
    if (m.has_step()) {
      const v1::StepReport& s = m.step();
      detect::ReplayRecord& r = records.emplace_back();
      r.step.step = s.step();
      r.step.epoch = s.epoch();
      r.step.loss = s.loss();
      r.step.grad_norm = s.grad_norm();
      r.step.jaccard_soft = s.has_jaccard_soft() ? s.jaccard_soft() : detect::kNaN;
      r.step.jaccard_hard = s.has_jaccard_hard() ? s.jaccard_hard() : detect::kNaN;
      r.step.accuracy = s.has_accuracy() ? s.accuracy() : detect::kNaN;
      r.step.learning_rate = s.learning_rate();
      r.layer_norms.assign(s.layer_grad_norms().begin(), s.layer_grad_norms().end());
    } else if (m.has_eval() && !records.empty()) {
      const v1::EvalReport& e = m.eval();
      detect::EvalSample& eval = records.back().eval.emplace();
      eval.step = e.step();
      eval.loss = e.loss();
      eval.jaccard_soft = e.has_jaccard_soft() ? e.jaccard_soft() : detect::kNaN;
      eval.jaccard_hard = e.has_jaccard_hard() ? e.jaccard_hard() : detect::kNaN;
      eval.accuracy = e.has_accuracy() ? e.accuracy() : detect::kNaN;
    }
  }
  return records;
}

void AddReplayVerb(Verbs& verbs) {
  auto o = std::make_shared<ReplayOptions>();
  CLI::App* replay = verbs.Add(
      "replay",
      "run a recorded trace (gradwatch CSV or Keras CSVLogger) or a trainer's spool through the detectors "
      "(--offline), or deliver it to the monitor as a run",
      [o](Context& c) { return Replay(c, *o); });
  replay->add_option("FILE", o->file, "the trace or spool")->required()->check(CLI::ExistingFile);
  replay->add_flag("--offline", o->offline, "detect in this process; without it, stream into the monitor as a run");
  replay->add_option("--format", o->format, "auto (the header decides), gradwatch-csv or keras-csv")
      ->check(CLI::IsMember({"auto", "gradwatch-csv", "keras-csv"}))
      ->capture_default_str();
  replay->add_option("--run-id", o->run_id, "run id for the replayed run (default: generated; a spool's own)");
  replay->add_option("--loss-bound", o->loss_bound,
                     "the loss's upper bound (1 for a Jaccard or Dice loss; 0 = unbounded, or a spool's own)")
      ->capture_default_str();
  replay->add_option("--threshold", o->thresholds, "detector override NAME=VALUE, repeatable (e.g. spike_z_critical=6)");
}

}  // namespace gradwatch::cli
