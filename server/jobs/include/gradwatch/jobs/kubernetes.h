// A launch rendered for Kubernetes (`gradwatch launch --launcher kubernetes --dry-run`): a
// List of a ConfigMap (the validated trainer config), a headless Service (a stable name for
// rank 0) and an Indexed Job of N pods, one rank each, running gradwatch-train with the
// torchrun environment (RANK from the completion index, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT), the monitor's address in the config, the reporter token from a Secret, and
// CPU, memory and GPU requests from the config's "resources".
//
// Why an Indexed Job and not a JobSet or Kubeflow's PyTorchJob: it is built into Kubernetes
// (batch/v1 since 1.24), so the manifest applies on any cluster without an operator; the
// completion index is exactly the rank, and the headless Service gives rank 0 a DNS name.
// What it lacks (gang scheduling, restarting all ranks when one fails) a JobSet adds.
//
// The manifest is built as JSON by a JSON library, so no config value can break out of its
// string; Kubernetes names are derived from the run id (lowercase, [a-z0-9-], <= 63).
#pragma once

#include <string>

namespace gradwatch::jobs {

struct KubernetesOptions {
  std::string image;            // the container image holding the trainer; required
  std::string trainer = "/usr/bin/gradwatch-train";  // the trainer's path in the image
  std::string monitor_address;  // host:port the pods reach the monitor at; required
  std::string token_secret;     // a Secret holding the reporter token; "" = the job sends none
  std::string token_key = "token";  // the key of the token in that Secret
  std::string name_space;       // metadata.namespace; "" = kubectl's current namespace
  int master_port = 29500;      // rank 0's rendezvous port (MASTER_PORT)
};

// The manifest (pretty JSON, a v1 List) for `config_json` as run `run_id` (the request's, or
// the config's). Throws InvalidLaunch for a config a launch would refuse (launch_config.h)
// and for options that are missing or malformed (field "image", "monitor_address" ...).
std::string RenderKubernetesJob(const std::string& config_json, const std::string& run_id,
                                const KubernetesOptions& options);

// A DNS-1123 label for `run_id`: lowercased, other characters as '-', at most 63, with a
// hash of the run id appended when anything had to change (so two run ids never collide).
std::string KubernetesName(const std::string& run_id);

}  // namespace gradwatch::jobs
