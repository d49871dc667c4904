#include "gradwatch/jobs/kubernetes.h"

#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>

#include "gradwatch/jobs/launch_config.h"
#include "train/config.h"

namespace gradwatch::jobs {
namespace {

using nlohmann::json;

constexpr char kJobDir[] = "/gradwatch/job";        // an emptyDir: the job's outputs
constexpr char kConfigDir[] = "/gradwatch/config";  // the ConfigMap

// Ranks one manifest may ask for: a cluster's, not this host's, so the bounds of
// kResourceLimits alone (the trainer's data-parallel limit is a monitor's, see README).
constexpr int kMaxRenderedRanks = 1024 * 256;

bool Dns1123(const std::string& s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

void Check(const KubernetesOptions& o) {
  if (o.image.empty()) throw InvalidLaunch("image", "a Kubernetes job needs the container image holding gradwatch-train (--image)");
  for (char c : o.image) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) throw InvalidLaunch("image", "holds a space or control character");
  }
  if (o.monitor_address.empty() || o.monitor_address.find(':') == std::string::npos) {
    throw InvalidLaunch("monitor_address", "the host:port the pods reach the monitor at (--monitor-address)");
  }
  if (!o.token_secret.empty() && !Dns1123(o.token_secret)) {
    throw InvalidLaunch("token_secret", "\"" + o.token_secret + "\" is not a Secret name ([a-z0-9-], <= 63)");
  }
  if (!o.name_space.empty() && !Dns1123(o.name_space)) {
    throw InvalidLaunch("namespace", "\"" + o.name_space + "\" is not a namespace name ([a-z0-9-], <= 63)");
  }
  if (o.master_port < 1 || o.master_port > 65535) throw InvalidLaunch("master_port", "must be 1..65535");
  if (o.trainer.empty() || o.trainer.front() != '/') throw InvalidLaunch("trainer", "an absolute path in the image");
}

json Metadata(const std::string& name, const std::string& run_id, const KubernetesOptions& o) {
  json m = {{"name", name},
            {"labels", {{"app.kubernetes.io/name", "gradwatch-train"}, {"app.kubernetes.io/managed-by", "gradwatch"}}},
            {"annotations", {{"gradwatch.dev/run-id", run_id}}}};
  if (!o.name_space.empty()) m["namespace"] = o.name_space;
  return m;
}

json Env(const std::string& name, int ranks, const KubernetesOptions& o) {
  json env = json::array({
      {{"name", "RANK"},
       {"valueFrom", {{"fieldRef", {{"fieldPath", "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}}}},
      {{"name", "LOCAL_RANK"}, {"value", "0"}},
      {{"name", "WORLD_SIZE"}, {"value", std::to_string(ranks)}},
      {{"name", "MASTER_ADDR"}, {"value", name + "-0." + name}},
      {{"name", "MASTER_PORT"}, {"value", std::to_string(o.master_port)}},
  });
  if (!o.token_secret.empty()) {
    env.push_back({{"name", "GRADWATCH_TOKEN"},
                   {"valueFrom", {{"secretKeyRef", {{"name", o.token_secret}, {"key", o.token_key}}}}}});
  }
  return env;
}

json Resources(const v1::JobResources& r, int threads) {
  const uint32_t cpus = r.cpus_per_task() ? r.cpus_per_task() : static_cast<uint32_t>(std::max(1, threads));
  json res = {{"requests", {{"cpu", std::to_string(cpus)}}}};
  if (r.memory_mb()) {
    res["requests"]["memory"] = std::to_string(r.memory_mb()) + "Mi";
    res["limits"]["memory"] = std::to_string(r.memory_mb()) + "Mi";
  }
  if (r.gpus_per_task()) res["limits"]["nvidia.com/gpu"] = std::to_string(r.gpus_per_task());
  return res;
}

}  // namespace

std::string KubernetesName(const std::string& run_id) {
  std::string name = "gradwatch-";
  for (char c : run_id) {
    name += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a')
            : ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) ? c
                                                                 : '-';
  }
  // Room for "-<index>" on pod hostnames is kept: 63 for the name, pods add at most 6.
  const bool changed = name != "gradwatch-" + run_id || name.size() > 56;
  if (changed) {
    char hash[9];
    std::snprintf(hash, sizeof hash, "%08zx", std::hash<std::string>{}(run_id) & 0xffffffffu);
    name = name.substr(0, 47);
    while (!name.empty() && name.back() == '-') name.pop_back();
    name += "-" + std::string(hash);
  }
  return name;
}

std::string RenderKubernetesJob(const std::string& config_json, const std::string& run_id,
                                const KubernetesOptions& o) {
  Check(o);
  std::string id = RequestedRunId(config_json, run_id);
  if (id.empty()) throw InvalidLaunch("run_id", "a Kubernetes job needs a run id (--run-id, or run_id in the config)");
  LaunchContext ctx{kJobDir, o.monitor_address, "", 0, kMaxRenderedRanks, kMaxRenderedRanks};  // a pod per rank
  const std::string config = PrepareLaunchConfig(config_json, id, ctx);
  const v1::JobResources resources = LaunchResources(config_json, ctx);
  const int ranks = static_cast<int>(resources.nodes() * resources.tasks_per_node());
  const int threads = json::parse(config).value("threads", 1);
  const std::string name = KubernetesName(id);

  json config_map = {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", Metadata(name, id, o)},
                     {"data", {{"config.json", config}}}};
  json service = {{"apiVersion", "v1"},
                  {"kind", "Service"},
                  {"metadata", Metadata(name, id, o)},
                  {"spec",
                   {{"clusterIP", "None"},
                    {"selector", {{"job-name", name}}},
                    {"ports", json::array({{{"name", "rendezvous"}, {"port", o.master_port}}})}}}};
  json container = {
      {"name", "trainer"},
      {"image", o.image},
      {"command", json::array({o.trainer})},
      {"args", json::array({"--config", std::string(kConfigDir) + "/config.json"})},
      {"workingDir", std::string(kJobDir) + "/out"},
      {"env", Env(name, ranks, o)},
      {"resources", Resources(resources, threads)},
      {"ports", json::array({{{"name", "rendezvous"}, {"containerPort", o.master_port}}})},
      {"volumeMounts", json::array({{{"name", "config"}, {"mountPath", kConfigDir}, {"readOnly", true}},
                                    {{"name", "job"}, {"mountPath", kJobDir}}})},
  };
  json pod = {{"metadata", {{"labels", Metadata(name, id, o)["labels"]}}},
              {"spec",
               {{"restartPolicy", "Never"},
                {"subdomain", name},
                {"containers", json::array({container})},
                {"volumes", json::array({{{"name", "config"}, {"configMap", {{"name", name}}}},
                                         {{"name", "job"}, {"emptyDir", json::object()}}})}}}};
  json job = {{"apiVersion", "batch/v1"},
              {"kind", "Job"},
              {"metadata", Metadata(name, id, o)},
              {"spec",
               {{"completionMode", "Indexed"},
                {"completions", ranks},
                {"parallelism", ranks},
                {"backoffLimit", 0},
                {"template", pod}}}};
  json list = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", json::array({config_map, service, job})}};
  return list.dump(2) + "\n";
}

}  // namespace gradwatch::jobs
