// gradwatchd: the gradwatch monitor. Parses flags and runs the server.
#include <CLI/CLI.hpp>
#include <iostream>

#include "gradwatch/common/version.h"
#include "gradwatch/monitor/server.h"

int main(int argc, char** argv) {
  gradwatch::monitor::ServerConfig config;
  CLI::App app{
      "gradwatchd — the gradwatch monitor.\n"
      "Receives training telemetry over gRPC, detects gradient explosions, non-finite values,\n"
      "divergence and collapse, acts on the run (clipping, learning rate, skip, rollback, stop),\n"
      "keeps a durable record and exports Prometheus metrics."};
  app.set_version_flag("--version", std::string("gradwatchd ") + gradwatch::Version());
  app.add_option("--listen", config.listen, "gRPC address (host:port; port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--metrics-listen", config.metrics_listen, "HTTP address for /metrics, the Alertmanager webhook and the live pages; \"\" for none")
      ->capture_default_str();
  app.add_option("--chartjs", config.chartjs,
                 "Chart.js file for the live pages (default: Debian's /usr/share/javascript/chart.js/chart.min.js)");
  app.add_option("--metrics-tls-cert", config.metrics_tls_cert,
                 "PEM certificate chain for TLS (https) on the --metrics-listen port (with --metrics-tls-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--metrics-tls-key", config.metrics_tls_key, "PEM private key of --metrics-tls-cert")
      ->check(CLI::ExistingFile);
  app.add_option("--http-threads", config.http_threads,
                 "HTTP requests served at once on the --metrics-listen port; more wait in a queue")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--data-dir", config.data_dir, "folder for the store (gradwatch.db)")->capture_default_str();
  app.add_option("--ports-file", config.ports_file,
                 "write the bound ports here as JSON {\"grpc_port\":N,\"metrics_port\":M}");
  app.add_option("--stall-timeout-ms", config.hub.stall_timeout_ms,
                 "a disconnected run is marked failed after this long")->capture_default_str();
  app.add_option("--retention-ms", config.hub.retention_ms,
                 "an ended run's metric series are removed after this long")->capture_default_str();
  app.add_option("--tokens", config.tokens_file,
                 "JSON file of bearer tokens with roles (operator, viewer, reporter scoped to a run_id)")
      ->check(CLI::ExistingFile);
  app.add_flag("--allow-remote-without-auth", config.allow_remote_without_auth,
               "listen on a non-loopback address although calls are not authenticated yet");
  app.add_option("--max-runs", config.hub.max_runs, "live runs at most")->capture_default_str();
  app.add_option("--max-streams", config.max_streams, "telemetry streams at once")->capture_default_str();
  app.add_option("--metrics-max-layers", config.metrics_max_layers,
                 "per-layer series per run; the rest fold into layer=\"(other)\"")->capture_default_str();
  app.add_option("--tls-cert", config.tls_cert, "PEM certificate chain for TLS on the gRPC port (with --tls-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", config.tls_key, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
  app.add_option("--tls-client-ca", config.tls_client_ca,
                 "require client certificates signed by this PEM CA")->check(CLI::ExistingFile);
  app.add_option("--tls-ca", config.tls_ca,
                 "the CA launched jobs trust to reach this monitor (default: --tls-cert, for a self-signed one)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-job-cert", config.tls_job_cert,
                 "client certificate launched jobs present to a monitor with --tls-client-ca")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-job-key", config.tls_job_key, "the key of --tls-job-cert")->check(CLI::ExistingFile);
  app.add_option("--trainer", config.trainer,
                 "the program launched jobs run (default: gradwatch-train next to gradwatchd)");
  app.add_option("--datasets-dir", config.datasets_dir,
                 "folder a launch's data.dir is resolved in (default: none; jobs use synthetic data)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--max-jobs", config.max_jobs, "launched jobs running at once; more wait, queued")
      ->capture_default_str();
  app.add_option("--max-job-ranks", config.max_job_ranks,
                 "ranks one launched job may ask for (resources: nodes x tasks_per_node); the local "
                 "launcher runs them on this host with gradwatch-train --nproc")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 18));
  app.add_option("--max-queued-jobs", config.max_queued_jobs,
                 "launched jobs waiting at once; past it a launch is refused (RESOURCE_EXHAUSTED)")
      ->capture_default_str();
  app.add_option("--stop-grace-ms", config.stop_grace_ms,
                 "a stopped job gets SIGTERM, then SIGKILL after this long")->capture_default_str();
  app.add_option("--launcher", config.launcher,
                 "where launched jobs run: local (this host) or slurm (sbatch; the Slurm clients must be on PATH, "
                 "SLURM_CONF is passed through)")
      ->check(CLI::IsMember({"local", "slurm"}))->capture_default_str();
  app.add_option("--slurm-partition", config.slurm_partition, "sbatch --partition for every job (default: the cluster's)");
  app.add_option("--slurm-account", config.slurm_account, "sbatch --account for every job");
  app.add_option("--slurm-time", config.slurm_time, "sbatch --time for every job (30, 2:00:00, 1-0)");
  app.add_option("--slurm-option", config.slurm_options,
                 "one more sbatch option for every job, --name or --name=value; repeatable (--slurm-option=--qos=high)")
      ->allow_extra_args(false);
  CLI11_PARSE(app, argc, argv);
  if (std::string problems = gradwatch::monitor::CheckLauncherFlags(config); !problems.empty()) {
    std::cerr << "gradwatchd: " << problems << "\n";
    return 2;
  }
  if (config.trainer.empty()) config.trainer = gradwatch::monitor::DefaultTrainer();
  return gradwatch::monitor::RunServer(config);
}
