// The JSON Printer: one object per line for each record (JSON Lines), field names in
// snake_case and enums by name, for scripts (`gradwatch --json ... | jq`).
#include <nlohmann/json.hpp>

#include "names.h"
#include "printer.h"

namespace gradwatch::cli {
namespace {

using nlohmann::json;

json MapJson(const google::protobuf::Map<std::string, double>& m) {
  json out = json::object();
  for (const auto& [k, v] : m) out[k] = v;
  return out;
}

// Data parallel: each rank's stream as the monitor sees it.
json RanksJson(const v1::Run& r) {
  json ranks = json::array();
  for (const auto& k : r.ranks()) {
    ranks.push_back({{"rank", k.rank()},
                     {"connected", k.connected()},
                     {"finished", k.finished()},
                     {"last_step", k.last_step()},
                     {"last_unix_millis", k.last_unix_millis()},
                     {"host", k.host()},
                     {"phase", v1::Heartbeat::Phase_Name(k.heartbeat().phase())}});
  }
  return ranks;
}

json RunJson(const v1::Run& r) {
  json j = {{"run_id", r.run_id()},
          {"state", v1::StateName(r.state())},
          {"mode", v1::ModeName(r.mode())},
          {"started_unix_millis", r.started_unix_millis()},
          {"steps", r.steps()},
          {"last_step", r.last_step()},
          {"last_loss", r.last_loss()},
          {"last_grad_norm", r.last_grad_norm()},
          {"events", r.events()},
          {"incidents", r.incidents()},
          {"total_steps", r.config().total_steps()},
          {"device", r.device()},
          {"policy", MapJson(r.config().policy())},
          {"thresholds", MapJson(r.config().thresholds())}};
  if (r.world_size() >= 2) {
    j["world_size"] = r.world_size();
    j["ranks"] = RanksJson(r);
  }
  return j;
}

json JobJson(const v1::Job& j) {
  return {{"job_id", j.job_id()},
          {"run_id", j.run_id()},
          {"state", v1::JobStateName(j.state())},
          {"exit_code", j.exit_code()},
          {"error", j.error()},
          {"pid", j.pid()},
          {"launcher", j.launcher().empty() ? "local" : j.launcher()},
          {"scheduler_job_id", j.scheduler_job_id()},
          {"scheduler_state", j.scheduler_state()},
          {"resources",
           {{"nodes", j.resources().nodes()},
            {"tasks_per_node", j.resources().tasks_per_node()},
            {"gpus_per_task", j.resources().gpus_per_task()},
            {"cpus_per_task", j.resources().cpus_per_task()},
            {"memory_mb", j.resources().memory_mb()}}},
          {"created_unix_millis", j.created_unix_millis()},
          {"started_unix_millis", j.started_unix_millis()},
          {"ended_unix_millis", j.ended_unix_millis()}};
}

json EventJson(const v1::Event& e) {
  // A NaN value (a detector with no statistic) is written as null.
  json j = {{"step", e.step()},        {"kind", e.kind()},   {"severity", SeverityName(e.severity())},
          {"message", e.message()},  {"value", e.value()}, {"first_layer", e.first_layer()},
          {"incident", e.incident_id()}};
  if (e.has_rank()) j["rank"] = e.rank();
  return j;
}

json CommandJson(const v1::CommandRecord& r) {
  const auto& e = r.effect();
  json j = {{"command_id", r.command().id()},
          {"action", v1::ActionName(r.command())},
          {"issued_by", r.command().issued_by()},
          {"reason", r.command().reason()},
          {"issued_unix_millis", r.issued_unix_millis()},
          {"issued_at_step", r.issued_at_step()},
          {"applied_at_step", r.ack().applied_at_step()},
          {"acknowledged", r.has_ack()},
          {"detail", r.ack().detail()},
          {"loss_before", e.loss_before()},
          {"loss_after", e.loss_after()},
          {"grad_norm_before", e.grad_norm_before()},
          {"grad_norm_after", e.grad_norm_after()}};
  if (r.rank_acks_size() > 0) {  // data parallel: where each rank applied it
    json acks = json::array();
    for (const auto& a : r.rank_acks()) {
      acks.push_back({{"rank", a.rank()},
                      {"applied_at_step", a.applied_at_step()},
                      {"result", a.result() == v1::CommandAck::RESULT_APPLIED ? "applied" : "rejected"}});
    }
    j["rank_acks"] = acks;
  }
  return j;
}

class JsonPrinter final : public Printer {
 public:
  explicit JsonPrinter(std::ostream& out) : out_(out) {}

  void Runs(const std::vector<v1::Run>& runs) override {
    for (const auto& r : runs) Line(RunJson(r));
  }
  void Run(const std::string& run_id, const v1::Run* run, const v1::Job* job) override {
    json j = run ? RunJson(*run) : json{{"run_id", run_id}};
    if (job) j["job"] = JobJson(*job);
    Line(j);
  }
  void Events(const Repeated<v1::Event>& events) override {
    for (const auto& e : events) Line(EventJson(e));
  }
  void Commands(const Repeated<v1::CommandRecord>& commands) override {
    for (const auto& c : commands) Line(CommandJson(c));
  }
  void CommandOutcome(const v1::SendCommandResponse& resp) override {
    const auto& rec = resp.record();
    Line({{"command_id", rec.command().id()},
          {"acknowledged", resp.acknowledged()},
          {"applied_at_step", rec.ack().applied_at_step()},
          {"result", rec.ack().result() == v1::CommandAck::RESULT_APPLIED ? "applied" : "rejected"},
          {"detail", rec.ack().detail()}});
  }
  void Policy(const v1::Run& r) override {
    Line({{"run_id", r.run_id()}, {"thresholds", MapJson(r.config().thresholds())},
          {"policy", MapJson(r.config().policy())}});
  }
  void Explanation(const std::string& run_id, const std::string& text) override {
    Line({{"run_id", run_id}, {"text", text}});
  }
  void Jobs(const Repeated<v1::Job>& jobs) override {
    for (const auto& j : jobs) Line(JobJson(j));
  }
  void Launched(const v1::Job& job, bool detached) override {
    if (detached) Line(JobJson(job));  // else the job is printed once, as it ended
  }
  void LaunchEnded(const v1::Job& job) override { Line(JobJson(job)); }
  void JobStopped(const v1::Job& job) override { Line(JobJson(job)); }
  void SpoolDelivered(const std::string& run_id, size_t steps, size_t messages, const std::string&) override {
    Line({{"run_id", run_id}, {"steps", steps}, {"messages", messages}});
  }
  void ReplayTotals(size_t, const std::string&, size_t) override {}

 private:
  void Line(const json& j) {
    // Invalid UTF-8 from a run is replaced, not thrown on.
    out_ << j.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }

  std::ostream& out_;
};

}  // namespace

std::unique_ptr<Printer> MakeJsonPrinter(std::ostream& out) { return std::make_unique<JsonPrinter>(out); }

}  // namespace gradwatch::cli
