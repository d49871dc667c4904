// The Kubernetes manifest as data: fields from the config and options, what is refused. The
// e2e test k8s_manifest_test.py validates the same output with `kubectl apply --dry-run=client`.
#include "gradwatch/jobs/kubernetes.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gradwatch/jobs/launch_config.h"

namespace gradwatch::jobs {
namespace {

using nlohmann::json;

KubernetesOptions Options() {
  KubernetesOptions o;
  o.image = "registry.example/gradwatch:1.0";
  o.monitor_address = "gradwatch.monitoring.svc:7070";
  o.token_secret = "gradwatch-reporter";
  return o;
}

json Env(const json& container, const std::string& name) {
  for (const auto& e : container["env"]) {
    if (e["name"] == name) return e;
  }
  return nullptr;
}

TEST(KubernetesJob, renders_n_ranks_with_the_torchrun_environment_and_the_token_from_a_secret) {
  json list = json::parse(RenderKubernetesJob(
      R"({"steps": 300, "threads": 3, "resources": {"nodes": 2, "tasks_per_node": 2, "gpus_per_task": 1, "memory_mb": 8192}})",
      "Run_1", Options()));
  ASSERT_EQ(list["items"].size(), 3u);
  const json& config_map = list["items"][0];
  const json& service = list["items"][1];
  const json& job = list["items"][2];
  const std::string name = job["metadata"]["name"];
  EXPECT_EQ(name, KubernetesName("Run_1"));
  EXPECT_EQ(job["metadata"]["annotations"]["gradwatch.dev/run-id"], "Run_1");
  EXPECT_EQ(job["spec"]["completionMode"], "Indexed");
  EXPECT_EQ(job["spec"]["completions"], 4);
  EXPECT_EQ(job["spec"]["parallelism"], 4);
  EXPECT_EQ(service["spec"]["clusterIP"], "None");
  EXPECT_EQ(job["spec"]["template"]["spec"]["subdomain"], name);
  const json& c = job["spec"]["template"]["spec"]["containers"][0];
  EXPECT_EQ(c["image"], "registry.example/gradwatch:1.0");
  EXPECT_EQ(Env(c, "WORLD_SIZE")["value"], "4");
  EXPECT_EQ(Env(c, "MASTER_ADDR")["value"], name + "-0." + name);
  EXPECT_EQ(Env(c, "MASTER_PORT")["value"], "29500");
  EXPECT_EQ(Env(c, "RANK")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']");
  EXPECT_EQ(Env(c, "GRADWATCH_TOKEN")["valueFrom"]["secretKeyRef"], (json{{"name", "gradwatch-reporter"}, {"key", "token"}}));
  EXPECT_EQ(c["resources"]["requests"]["cpu"], "3");  // the config's threads
  EXPECT_EQ(c["resources"]["requests"]["memory"], "8192Mi");
  EXPECT_EQ(c["resources"]["limits"]["nvidia.com/gpu"], "1");
  json config = json::parse(config_map["data"]["config.json"].get<std::string>());
  EXPECT_EQ(config["steps"], 300);
  EXPECT_EQ(config["run_id"], "Run_1");
  EXPECT_EQ(config["monitor"], "gradwatch.monitoring.svc:7070");
  EXPECT_FALSE(config.contains("resources"));
}

TEST(KubernetesJob, names_are_dns_labels_that_do_not_collide) {
  EXPECT_EQ(KubernetesName("exp-1"), "gradwatch-exp-1");
  EXPECT_NE(KubernetesName("Exp.1"), KubernetesName("exp_1"));
  std::string longest = KubernetesName(std::string(128, 'a'));
  EXPECT_LE(longest.size(), 56u);
  for (char ch : KubernetesName("A.B_c")) EXPECT_TRUE((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-');
}

TEST(KubernetesJob, refuses_what_a_launch_refuses_and_missing_options) {
  EXPECT_THROW(RenderKubernetesJob(R"({"monitor": "evil:1"})", "r", Options()), InvalidLaunch);
  EXPECT_THROW(RenderKubernetesJob("{}", "", Options()), InvalidLaunch);  // no run id
  KubernetesOptions o = Options();
  o.image = "";
  EXPECT_THROW(RenderKubernetesJob("{}", "r", o), InvalidLaunch);
  o = Options();
  o.token_secret = "Bad Secret";
  EXPECT_THROW(RenderKubernetesJob("{}", "r", o), InvalidLaunch);
  EXPECT_THROW(RenderKubernetesJob("{}", "r\"1\n", Options()), InvalidLaunch);
  // Config strings stay inside the ConfigMap's JSON string (the manifest is built as data).
  json list = json::parse(RenderKubernetesJob(R"({"scenario": "seed", "mode": "guard"})", "r1", Options()));
  EXPECT_EQ(json::parse(list["items"][0]["data"]["config.json"].get<std::string>())["scenario"], "seed");
}

}  // namespace
}  // namespace gradwatch::jobs
