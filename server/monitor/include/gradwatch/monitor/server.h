// gradwatchd as a library: the gRPC services (Telemetry, Runs, health, reflection),
// the Prometheus endpoint, the store and the hub, wired together. main.cc only parses
// flags into a ServerConfig and calls RunServer.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gradwatch/monitor/hub.h"

namespace gradwatch::monitor {

struct ServerConfig {
  std::string listen = "127.0.0.1:7070";          // gRPC; port 0 picks a free one
  // HTTP: Prometheus /metrics, the Alertmanager webhook, the live pages; port 0 picks a
  // free one; "" = no HTTP server.
  std::string metrics_listen = "127.0.0.1:9464";
  std::string chartjs;  // Chart.js file for the live pages; "" = Debian's libjs-chart.js
  // TLS (https) on the HTTP port: PEM certificate chain and key, both or neither ("" = plain).
  std::string metrics_tls_cert, metrics_tls_key;
  int http_threads = 64;  // HTTP requests served at once; more wait in civetweb's queue
  std::string data_dir = "gradwatch-data";        // holds gradwatch.db
  std::string ports_file;                         // when set, the bound ports are written here as JSON
  HubOptions hub;
  size_t max_streams = 4096;             // telemetry streams at once; more are refused (64 jobs
                                         // of 16 ranks are 1,024: room for their reconnects)
  int max_message_bytes = 4 << 20;       // a larger message ends its stream
  size_t metrics_max_layers = 32;
  int tick_ms = 100;                              // housekeeping period
  // Bearer tokens with roles (see src/auth.h); "" = no authentication, loopback only.
  std::string tokens_file;
  // RunServer refuses non-loopback addresses without tokens unless this is set.
  bool allow_remote_without_auth = false;
  // TLS on the gRPC port: the server's PEM certificate chain and key ("" = plain), and a
  // CA whose client certificates are then required ("" = none asked for).
  std::string tls_cert, tls_key, tls_client_ca;
  // The CA launched jobs trust to reach this monitor over TLS ("" = tls_cert itself, right
  // for a self-signed certificate).
  std::string tls_ca;
  // The client certificate and key launched jobs present when tls_client_ca asks for one.
  std::string tls_job_cert, tls_job_key;
  // Jobs (see gradwatch/jobs/jobs.h), kept in <data_dir>/jobs.
  std::string trainer;                   // the program jobs run; "" = launching is refused
  std::string datasets_dir;              // a launch's data.dir resolves below this; "" = synthetic only
  size_t max_jobs = 2;                   // jobs running at once
  size_t max_queued_jobs = 64;           // jobs waiting at once; past it Launch is RESOURCE_EXHAUSTED
  int max_job_ranks = 64;                // ranks of one launched job (nodes x tasks_per_node)
  int64_t stop_grace_ms = 10'000;        // a stopped job is killed after this long
  std::string launcher = "local";        // "local": on this host; "slurm": sbatch (gradwatch/jobs/slurm.h)
  // The Slurm launcher's sbatch --partition, --account, --time ("" = Slurm's default) and
  // more options ("--name[=value]"), checked by CheckLauncherFlags.
  std::string slurm_partition, slurm_account, slurm_time;
  std::vector<std::string> slurm_options;
};

// Every problem with the launcher flags of `config` ("" when none), for gradwatchd to refuse
// at start: an unknown launcher, malformed Slurm options, Slurm options without Slurm.
std::string CheckLauncherFlags(const ServerConfig& config);

// A running monitor. Construction binds every port and throws std::runtime_error with
// the address and reason when one cannot be bound or the store cannot be opened.
class Server {
 public:
  explicit Server(const ServerConfig& config, const Clock& clock);
  ~Server();  // Shutdown() if not done
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int grpc_port() const;
  int metrics_port() const;  // 0 when metrics_listen is ""
  Hub& hub();

  void Wait();      // until Shutdown() from another thread
  void Shutdown();  // ends streams, drains the store; idempotent

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What a --listen or --metrics-listen address is: one HOST:PORT (a list, a bare host or a
// bad port is an error) and whether every address HOST resolves to is loopback.
struct ListenCheck {
  std::string error;  // "" when the address is well-formed and resolves
  bool loopback = false;
};
ListenCheck CheckListenAddress(const std::string& address);

// gradwatch-train next to this executable, or "" when there is none.
std::string DefaultTrainer();

// Runs a monitor until SIGINT or SIGTERM; returns the process exit code.
int RunServer(const ServerConfig& config);

}  // namespace gradwatch::monitor
