#include "gradwatch/jobs/launch_config.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "gradwatch/common/run_id.h"
#include "train/config.h"

namespace gradwatch::jobs {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Splits the trainer's "config_json: field: reason" (or 'config_json: unknown field "x"')
// into the field and the message.
[[noreturn]] void Rethrow(const std::string& message) {
  const std::string prefix = "config_json: ";
  std::string rest = message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
  const std::string unknown = "unknown field \"";
  if (rest.rfind(unknown, 0) == 0) {
    std::string field = rest.substr(unknown.size(), rest.find('"', unknown.size()) - unknown.size());
    const std::string reason = "unknown field; a launch config holds only the trainer's settings";
    if (field.empty()) throw InvalidLaunch("config_json", "\"\": " + reason);  // every refusal names a field
    throw InvalidLaunch(field, reason);
  }
  auto colon = rest.find(": ");
  if (colon == 0 || colon == std::string::npos || rest.find(' ') < colon) throw InvalidLaunch("config_json", rest);
  throw InvalidLaunch(rest.substr(0, colon), rest.substr(colon + 2));
}

// How deeply arrays and objects nest in `text` (outside strings); a config needs 3, and
// printing a deep document recurses once per level.
int NestingDepth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (escaped) {
      escaped = false;
    } else if (in_string) {
      escaped = ch == '\\';
      in_string = ch != '"';
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  return deepest;
}

constexpr int kMaxNesting = 16;

json ParseObject(const std::string& config_json) {
  if (config_json.size() > kMaxLaunchConfigBytes) {
    throw InvalidLaunch("config_json", std::to_string(config_json.size()) + " bytes; must be <= " +
                                           std::to_string(kMaxLaunchConfigBytes));
  }
  if (int depth = NestingDepth(config_json); depth > kMaxNesting) {
    throw InvalidLaunch("config_json", "nested " + std::to_string(depth) + " levels deep; must be <= " +
                                           std::to_string(kMaxNesting));
  }
  json doc = json::parse(config_json.empty() ? "{}" : config_json, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) throw InvalidLaunch("config_json", "not a JSON object");
  return doc;
}

constexpr size_t kMaxRelativePath = 255;

// A relative path of safe characters that stays below its base.
void CheckRelative(const std::string& field, const std::string& path) {
  if (path.size() > kMaxRelativePath) {
    throw InvalidLaunch(field, std::to_string(path.size()) + " characters; must be <= " +
                                   std::to_string(kMaxRelativePath));
  }
  for (char ch : path) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-' || ch == '/';
    if (!ok) {
      throw InvalidLaunch(field, "\"" + path + "\" may hold only letters, digits and . _ - /; '" +
                                     std::string(1, ch) + "' is not allowed");
    }
  }
  if (path.front() == '/') throw InvalidLaunch(field, "\"" + path + "\" must be relative to the job's folder");
  for (const auto& part : fs::path(path)) {
    if (part == "..") throw InvalidLaunch(field, "\"" + path + "\" leaves the job's folder (\"..\")");
  }
}

// The parts of a relative path, without "." and empty ones ("a//./b/" is a, b).
std::vector<std::string> PartsOf(const std::string& path) {
  std::vector<std::string> parts;
  for (const auto& part : fs::path(path)) {
    if (!part.empty() && part != ".") parts.push_back(part.string());
  }
  return parts;
}

bool Reserved(const std::string& name) {
  return name == "job.json" || name == "config.json" || name == "train.log" || name == "summary.json" ||
         name.rfind("job.json.", 0) == 0;
}

// `inner` is `outer` or lies inside it.
bool Within(const std::vector<std::string>& inner, const std::vector<std::string>& outer) {
  return inner.size() >= outer.size() && std::equal(outer.begin(), outer.end(), inner.begin());
}

// Resolves the job-written paths inside <job_dir>/out, refusing the folder itself, the
// monitor's own file names and outputs that collide.
void ResolveOutputs(train::TrainConfig& config, const fs::path& out) {
  std::vector<std::pair<const char*, std::vector<std::string>>> seen;
  for (auto [field, value] : {std::pair<const char*, std::string*>{"checkpoint_dir", &config.checkpoint_dir},
                              {"trace_csv", &config.trace_csv},
                              {"spool", &config.spool}}) {
    if (value->empty()) continue;
    CheckRelative(field, *value);
    auto parts = PartsOf(*value);
    if (parts.empty()) throw InvalidLaunch(field, "\"" + *value + "\" names the job's output folder itself");
    for (const auto& part : parts) {
      if (Reserved(part)) throw InvalidLaunch(field, "\"" + *value + "\" uses \"" + part + "\", a name the monitor keeps");
    }
    for (const auto& [other, other_parts] : seen) {
      if (Within(parts, other_parts) || Within(other_parts, parts)) {
        throw InvalidLaunch(field, "\"" + *value + "\" collides with " + other);
      }
    }
    seen.emplace_back(field, parts);
    *value = (out / *value).lexically_normal().string();
  }
  if (config.spool.empty()) config.spool = (out / "spool.gwspool").string();
}

std::string RunIdOf(const json& doc, const std::string& run_id) {
  std::string from_config;
  if (doc.contains("run_id") && doc["run_id"].is_string()) from_config = doc["run_id"].get<std::string>();
  for (const std::string* id : std::initializer_list<const std::string*>{&run_id, &from_config}) {
    if (!id->empty() && !ValidRunId(*id)) {
      throw InvalidLaunch("run_id", "\"" + *id + "\" must be " + kRunIdRule);
    }
  }
  if (!run_id.empty() && !from_config.empty() && run_id != from_config) {
    throw InvalidLaunch("run_id", "the request says \"" + run_id + "\" but the config says \"" + from_config + "\"");
  }
  return run_id.empty() ? from_config : run_id;
}

// "resources" checked field by field against kResourceLimits.
v1::JobResources ResourcesOf(const json& doc, const LaunchContext& context) {
  v1::JobResources r;
  json given = doc.contains("resources") ? doc["resources"] : json::object();
  if (!given.is_object()) throw InvalidLaunch("resources", "must be an object such as {\"nodes\": 1}");
  const auto* reflection = r.GetReflection();
  for (const auto& item : given.items()) {
    const std::string& key = item.key();  // a named local: C++17 lambdas cannot capture a structured binding
    bool known = std::any_of(std::begin(kResourceLimits), std::end(kResourceLimits),
                             [&](const ResourceLimit& l) { return key == l.field; });
    if (!known) throw InvalidLaunch("resources." + key, "unknown field; known: nodes, tasks_per_node, gpus_per_task, cpus_per_task, memory_mb");
  }
  for (const ResourceLimit& l : kResourceLimits) {
    const std::string field = std::string("resources.") + l.field;
    uint32_t v = l.fallback;
    if (given.contains(l.field)) {
      const json& value = given[l.field];
      if (!value.is_number_integer()) throw InvalidLaunch(field, "must be a whole number, got " + value.dump());
      auto n = value.get<int64_t>();
      if (n < l.min || n > l.max) {
        throw InvalidLaunch(field, "must be " + std::to_string(l.min) + ".." + std::to_string(l.max) + ", got " +
                                       std::to_string(n));
      }
      v = static_cast<uint32_t>(n);
    }
    reflection->SetUInt32(&r, r.GetDescriptor()->FindFieldByName(l.field), v);
  }
  if (r.nodes() > static_cast<uint32_t>(std::max(1, context.max_nodes))) {
    throw InvalidLaunch("resources.nodes", std::to_string(r.nodes()) + " asked; this monitor's launcher runs " +
                                               "every rank on one host (gradwatchd --launcher slurm spreads them)");
  }
  const uint64_t ranks = uint64_t{r.nodes()} * r.tasks_per_node();
  if (ranks > static_cast<uint64_t>(std::max(1, context.max_ranks))) {
    throw InvalidLaunch("resources", std::to_string(ranks) + " ranks asked (nodes " + std::to_string(r.nodes()) +
                                         " x tasks_per_node " + std::to_string(r.tasks_per_node()) + "); this monitor " +
                                         "launches at most " + std::to_string(std::max(1, context.max_ranks)) +
                                         " (gradwatchd --max-job-ranks)");
  }
  return r;
}

}  // namespace

v1::JobResources LaunchResources(const std::string& config_json, const LaunchContext& context) {
  return ResourcesOf(ParseObject(config_json), context);
}

std::string OutputDir(const std::string& job_dir) { return (fs::path(job_dir) / "out").string(); }

std::string RequestedRunId(const std::string& config_json, const std::string& run_id) {
  return RunIdOf(ParseObject(config_json), run_id);
}

std::string PrepareLaunchConfig(const std::string& config_json, const std::string& run_id,
                                const LaunchContext& context) {
  json doc = ParseObject(config_json);
  std::string id = RunIdOf(doc, run_id);
  for (const char* field : {"monitor", "no_monitor"}) {
    if (doc.contains(field)) throw InvalidLaunch(field, "a launched job reports to this monitor; leave it out");
  }
  if (doc.contains("summary_json")) throw InvalidLaunch("summary_json", "set by the launcher; leave it out");
  const v1::JobResources resources = ResourcesOf(doc, context);  // the scheduler's, not the trainer's
  doc.erase("resources");

  train::TrainConfig config;
  try {
    config = train::ParseConfigJson(doc.dump(), "config_json");
  } catch (const std::exception& e) {
    Rethrow(e.what());
  }
  config.run_id = id;
  // One host runs tasks_per_node ranks of `threads` each.
  const int64_t host_threads = int64_t{config.threads} * resources.tasks_per_node();
  if (context.max_threads > 0 && host_threads > context.max_threads) {
    throw InvalidLaunch("threads", resources.tasks_per_node() > 1
                                       ? std::to_string(config.threads) + " x " +
                                             std::to_string(resources.tasks_per_node()) + " ranks a host is " +
                                             std::to_string(host_threads) + "; must be <= " +
                                             std::to_string(context.max_threads) + " (this monitor's limit for one job)"
                                       : "must be <= " + std::to_string(context.max_threads) +
                                             " (this monitor's limit for one job), got " +
                                             std::to_string(config.threads));
  }
  auto problems = train::Validate(config);
  if (!problems.empty()) {
    std::string joined;
    for (const auto& p : problems) joined += (joined.empty() ? "" : "; ") + p;
    Rethrow(joined);
  }

  const fs::path dir(context.job_dir);
  ResolveOutputs(config, OutputDir(context.job_dir));
  if (!config.data.dir.empty()) {
    if (context.datasets_dir.empty()) {
      throw InvalidLaunch("data.dir", "this monitor has no datasets folder (gradwatchd --datasets-dir); "
                                      "leave data.dir out for synthetic data");
    }
    CheckRelative("data.dir", config.data.dir);
    config.data.dir = (fs::path(context.datasets_dir) / config.data.dir).lexically_normal().string();
  }
  config.monitor = context.monitor_address;
  config.no_monitor = false;
  config.summary_json = (dir / "summary.json").string();
  return train::ToJson(config);
}

}  // namespace gradwatch::jobs
