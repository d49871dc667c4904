// The JSON API on the HTTP port: /api/v1/runs and /api/v1/runs/RUN/steps?after=N[&layers=1],
// which the live pages poll. Read-only; every parameter is checked and a bad one is a 400.
#include <charconv>
#include <limits>
#include <optional>

#include "convert.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "http_reply.h"

namespace gradwatch::monitor {
namespace {

HttpResponse ListRuns(const HttpContext& ctx) {
  json runs = json::array();
  for (const auto& r : ctx.hub->ListRuns()) {
    runs.push_back({{"run_id", r.run_id()}, {"state", StateName(r.state())}, {"mode", ModeName(r.mode())},
                    {"steps", r.steps()}, {"last_step", r.last_step()}, {"total_steps", r.config().total_steps()},
                    {"loss", Num(r.last_loss())}, {"grad_norm", Num(r.last_grad_norm())}, {"events", r.events()}});
  }
  return JsonReply({{"runs", runs}});
}

// The "after" parameter: a step number that fits the store's signed 64-bit steps.
std::optional<uint64_t> ParseStep(const std::string& text) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [stop, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || stop != end) return std::nullopt;
  if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return value;
}

// Per-layer gradient norms of a step, in the run's layer_names order.
json LayerNorms(const v1::StepReport& s) {
  json norms = json::array();
  for (float v : s.layer_grad_norms()) norms.push_back(Num(v));
  return norms;
}

// What each step array holds, by position; the reply's "step_fields" says the same.
constexpr const char* kStepFields[] = {"step",         "loss",           "grad_norm",         "learning_rate",
                                       "jaccard_soft", "jaccard_hard",   "clip_threshold",    "layer_grad_norms",
                                       "scalars",      "system"};

// A step's named scalars as an object ({} when none).
json ScalarsJson(const v1::StepReport& s) {
  json out = json::object();
  for (const auto& [name, value] : s.scalars()) out[name] = Num(value);
  return out;
}

// A step's system metrics as an object of those reported (null when none).
json SystemJson(const v1::StepReport& s) {
  if (!s.has_system()) return nullptr;
  const v1::SystemMetrics& m = s.system();
  json out = json::object();
  if (m.has_data_seconds()) out["data_seconds"] = Num(m.data_seconds());
  if (m.has_compute_seconds()) out["compute_seconds"] = Num(m.compute_seconds());
  if (m.has_report_seconds()) out["report_seconds"] = Num(m.report_seconds());
  if (m.has_resident_bytes()) out["resident_bytes"] = m.resident_bytes();
  if (m.has_cuda_allocated_bytes()) out["cuda_allocated_bytes"] = m.cuda_allocated_bytes();
  if (m.has_cuda_reserved_bytes()) out["cuda_reserved_bytes"] = m.cuda_reserved_bytes();
  if (m.has_cuda_peak_allocated_bytes()) out["cuda_peak_allocated_bytes"] = m.cuda_peak_allocated_bytes();
  if (m.has_device_utilization()) out["device_utilization"] = m.device_utilization();
  return out;
}

json RecordsAfter(const store::Store& store, const std::string& run_id, uint64_t after, bool layers) {
  json steps = json::array(), evals = json::array(), events = json::array(), commands = json::array();
  for (const auto& s : store.ListSteps(run_id, after, 5000)) {
    steps.push_back({s.step(), Num(s.loss()), Num(s.grad_norm()), Num(s.learning_rate()),
                     s.has_jaccard_soft() ? Num(s.jaccard_soft()) : json(nullptr),
                     s.has_jaccard_hard() ? Num(s.jaccard_hard()) : json(nullptr),
                     s.clipping().kind() == v1::Clipping::KIND_OFF ? json(nullptr) : Num(s.clipping().threshold()),
                     layers ? LayerNorms(s) : json(nullptr), ScalarsJson(s), SystemJson(s)});
  }
  for (const auto& e : store.ListEvals(run_id)) {
    if (e.step() <= after) continue;
    evals.push_back({e.step(), Num(e.loss()), e.has_jaccard_soft() ? Num(e.jaccard_soft()) : json(nullptr),
                     e.has_jaccard_hard() ? Num(e.jaccard_hard()) : json(nullptr)});
  }
  for (const auto& e : store.ListEvents(run_id)) {
    events.push_back({{"step", e.step()}, {"kind", e.kind()},
                      {"severity", e.severity() == v1::SEVERITY_CRITICAL ? "critical" : "warning"},
                      {"message", e.message()}, {"first_layer", e.first_layer()}});
  }
  for (const auto& c : store.ListCommands(run_id)) {
    commands.push_back({{"id", c.command().id()}, {"action", ActionName(c.command())},
                        {"issued_by", c.command().issued_by()}, {"reason", c.command().reason()},
                        {"issued_at_step", c.issued_at_step()},
                        {"applied_at_step", c.has_ack() ? json(c.ack().applied_at_step()) : json(nullptr)}});
  }
  return {{"step_fields", kStepFields}, {"steps", steps}, {"evals", evals}, {"events", events},
          {"commands", commands}};
}

HttpResponse Steps(const HttpRequest& req, const HttpContext& ctx, const std::string& run_id) {
  auto run = ctx.hub->GetRun(run_id);
  if (!run) return JsonError(404, "no run " + Quote(run_id));
  uint64_t after = 0;
  if (auto text = QueryParam(req.query, "after")) {
    auto step = ParseStep(*text);
    if (!step) {
      return JsonError(400, "query parameter \"after\" must be a step number 0..9223372036854775807, got " +
                                Quote(*text));
    }
    after = *step;
  }
  auto layers = QueryParam(req.query, "layers").value_or("0");
  if (layers != "0" && layers != "1") {
    return JsonError(400, "query parameter \"layers\" must be 0 or 1, got " + Quote(layers));
  }
  json out = RecordsAfter(*ctx.store, run_id, after, layers == "1");
  out["run"] = {{"run_id", run->run_id()}, {"state", StateName(run->state())}, {"mode", ModeName(run->mode())},
                {"steps", run->steps()}, {"last_step", run->last_step()}, {"total_steps", run->config().total_steps()},
                {"layer_names", run->layer_names()}};
  return JsonReply(out);
}

}  // namespace

// /api/v1/runs and /api/v1/runs/RUN/steps?after=N.
HttpResponse RunsApi(const HttpRequest& req, const HttpContext& ctx) {
  const std::string prefix = "/api/v1/runs/";
  if (req.path.size() <= prefix.size()) return ListRuns(ctx);
  std::string rest = req.path.substr(prefix.size());
  auto slash = rest.find('/');
  if (slash == std::string::npos || rest.substr(slash) != "/steps") {
    return JsonError(404, "unknown path " + Quote(req.path) + "; try /api/v1/runs or /api/v1/runs/RUN/steps?after=N");
  }
  return Steps(req, ctx, rest.substr(0, slash));
}

}  // namespace gradwatch::monitor
