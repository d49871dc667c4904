#include "gradwatch/monitor/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/grpcpp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>

#include <malloc.h>

#include <condition_variable>
#include <functional>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <stdexcept>

extern char** environ;

#include "gradwatch/common/file.h"
#include "gradwatch/common/version.h"
#include "gradwatch/jobs/jobs.h"
#include "gradwatch/jobs/slurm.h"
#include "gradwatch/metrics/exporter.h"
#include "gradwatch/store/store.h"
#include "http.h"
#include "jobs_service.h"
#include "runs_service.h"
#include "telemetry_service.h"

namespace gradwatch::monitor {


namespace {

jobs::SlurmOptions SlurmOptionsOf(const ServerConfig& config) {
  jobs::SlurmOptions o;
  o.partition = config.slurm_partition;
  o.account = config.slurm_account;
  o.time = config.slurm_time;
  o.options = config.slurm_options;
  return o;
}

// "host" of "host:port" (an IPv6 host keeps its brackets).
std::string HostOf(const std::string& address) { return address.substr(0, address.rfind(':')); }

}  // namespace

struct Server::Impl {
  Impl(const ServerConfig& config, const Clock& clock) : config(config) {
    metrics::ExporterOptions mopts;
    mopts.max_layers = config.metrics_max_layers;
    mopts.version = Version();
    exporter = std::make_unique<metrics::Exporter>(mopts);

    store::StoreOptions sopts;
    sopts.path = (std::filesystem::path(config.data_dir) / "gradwatch.db").string();
    sopts.on_committed = [this](const std::map<store::StreamKey, uint64_t>& stored) {
      if (Hub* h = hub_ptr.load()) h->OnStored(stored);
    };
    // The store logs its first failure and its recovery itself (not every retry); these
    // feed gradwatch_store_errors_total and gradwatch_store_healthy (alert GradwatchStoreFailing).
    sopts.on_error = [this](const std::string&) { exporter->StoreWriteFailed(); };
    sopts.on_recovered = [this] { exporter->SetStoreHealthy(true); };
    store = std::make_unique<store::Store>(sopts);
    hub = std::make_unique<Hub>(config.hub, *store, *exporter, clock);
    hub_ptr = hub.get();

    if (!config.tokens_file.empty()) auth = Auth::Load(config.tokens_file);

    launcher = MakeLauncher(config);
    jobs = std::make_unique<jobs::Jobs>(JobsOptionsOf(config, clock, auth.enabled()), *launcher);
    auth.set_job_tokens([this](const std::string& token) { return jobs->RunForToken(token); });
    if (!config.metrics_listen.empty()) StartHttp(config);
    telemetry = std::make_unique<TelemetryService>(*hub, *exporter, config.max_streams, auth);
    runs = std::make_unique<RunsService>(*hub, *store, auth);
    jobs_service = std::make_unique<JobsService>(*jobs, *hub, auth);
    StartGrpc(config);
    // Launched trainers report here: this host, over loopback when listening on all addresses.
    std::string host = HostOf(config.listen);
    if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
    jobs->SetMonitorAddress(host + ":" + std::to_string(grpc_port));
    ticker = std::thread([this] { TickLoop([this](uint64_t tick) { HubTick(tick); }); });
    // Jobs on a timer of their own: a scheduler that is slow to answer (sbatch, scontrol,
    // bounded at 30 s) must not hold up the runs' stall, hang and gate timers.
    job_ticker = std::thread([this] { TickLoop([this](uint64_t) { jobs->Tick(); jobs_service->Tick(); }); });
    WritePortsFile();
  }

  void StartHttp(const ServerConfig& config) {
    HttpOptions ho;
    ho.listen = config.metrics_listen;
    ho.auth = &auth;
    if (!config.chartjs.empty()) ho.chartjs = config.chartjs;
    ho.threads = config.http_threads;
    ho.tls_cert = config.metrics_tls_cert;
    ho.tls_key = config.metrics_tls_key;
    ho.scratch_dir = config.data_dir;  // holds the key file civetweb reads (mode 0600)
    http = std::make_unique<HttpServer>(ho, exporter->registry(), *hub, *store);
  }

  void StartGrpc(const ServerConfig& config) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(config.listen, ServerCredentials(config), &grpc_port);
    builder.RegisterService(telemetry.get());
    builder.RegisterService(runs.get());
    builder.RegisterService(jobs_service.get());
    builder.SetMaxReceiveMessageSize(config.max_message_bytes);
    // Find a half-open connection within ~20 s: ping every 10 s, give up 10 s later; and
    // let trainers ping an idle stream as often as their keepalive asks.
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5'000);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    // A port another process holds is an error, not shared: with SO_REUSEPORT (gRPC's
    // default on Linux) a second monitor would start and the kernel would split the
    // trainers between the two.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    grpc_server = builder.BuildAndStart();
    if (!grpc_server || grpc_port == 0) {
      throw std::runtime_error("cannot listen for gRPC on " + config.listen +
                               ": address in use (another gradwatchd?) or not an address of this host");
    }
  }

  static std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const ServerConfig& config) {
    if (config.tls_cert.empty() && config.tls_key.empty()) return grpc::InsecureServerCredentials();
    if (config.tls_cert.empty() || config.tls_key.empty()) {
      throw std::runtime_error("TLS needs both --tls-cert and --tls-key");
    }
    if (config.tls_job_cert.empty() != config.tls_job_key.empty()) {
      throw std::runtime_error("--tls-job-cert and --tls-job-key go together");
    }
    grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    options.pem_key_cert_pairs.push_back(
        {ReadFileOrThrow(config.tls_key, "--tls-key"), ReadFileOrThrow(config.tls_cert, "--tls-cert")});
    if (!config.tls_client_ca.empty()) {
      options.pem_root_certs = ReadFileOrThrow(config.tls_client_ca, "--tls-client-ca");
      options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    return grpc::SslServerCredentials(options);
  }

  // Throws std::invalid_argument for an unknown launcher or bad Slurm options.
  static std::unique_ptr<jobs::Launcher> MakeLauncher(const ServerConfig& config) {
    if (config.launcher == "local") return std::make_unique<jobs::LocalLauncher>();
    if (config.launcher == "slurm") {
      jobs::SlurmOptions o = SlurmOptionsOf(config);
      o.log = [](const std::string& line) { std::cerr << "gradwatchd: " << line << std::endl; };
      return std::make_unique<jobs::SlurmLauncher>(o, jobs::SystemRunner(o.command_timeout_ms));
    }
    throw std::invalid_argument("--launcher " + config.launcher + ": must be local or slurm");
  }

  static jobs::JobsOptions JobsOptionsOf(const ServerConfig& config, const Clock& clock, bool tokens) {
    jobs::JobsOptions o;
    o.dir = (std::filesystem::path(config.data_dir) / "jobs").string();
    o.trainer = config.trainer;
    o.datasets_dir = config.datasets_dir;
    o.max_running = config.max_jobs;
    o.max_queued = config.max_queued_jobs;
    o.max_ranks = config.max_job_ranks;
    o.default_grace_ms = config.stop_grace_ms;
    o.reporter_tokens = tokens;
    o.now_ms = [&clock] { return clock.NowMillis(); };
    // The monitor's environment, less its own gradwatch settings; a job gets its own
    // token, and the monitor's certificate to trust (a self-signed one covers 127.0.0.1).
    for (char** e = environ; *e; ++e) {
      if (std::string(*e).rfind("GRADWATCH_", 0) != 0) o.env.push_back(*e);
    }
    if (!config.tls_cert.empty()) {
      const std::string& ca = config.tls_ca.empty() ? config.tls_cert : config.tls_ca;
      o.env.push_back("GRADWATCH_TLS_CA=" + std::filesystem::absolute(ca).string());
    }
    if (!config.tls_job_cert.empty()) {
      o.env.push_back("GRADWATCH_TLS_CERT=" + std::filesystem::absolute(config.tls_job_cert).string());
      o.env.push_back("GRADWATCH_TLS_KEY=" + std::filesystem::absolute(config.tls_job_key).string());
    }
    return o;
  }

  // Calls `tick(n)` every tick_ms until Shutdown.
  void TickLoop(const std::function<void(uint64_t)>& tick) {
    std::unique_lock<std::mutex> lock(mu);
    for (uint64_t n = 1; !stopping; ++n) {
      cv.wait_for(lock, std::chrono::milliseconds(config.tick_ms));
      lock.unlock();
      tick(n);
      lock.lock();
    }
  }

  void HubTick(uint64_t tick) {
    hub->Tick();
    // Give freed memory back every second: glibc keeps what the stream and store
    // threads freed in per-thread arenas, which reads as growth over millions of reports.
    if (tick % 10 == 0) malloc_trim(0);
  }

  void WritePortsFile() {
    if (config.ports_file.empty()) return;
    WriteFileAtomically(config.ports_file, "{\"grpc_port\": " + std::to_string(grpc_port) +
                                               ", \"metrics_port\": " + std::to_string(MetricsPort()) + "}\n");
  }

  int MetricsPort() const { return http ? http->port() : 0; }

  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) return;
      stopping = true;
    }
    cv.notify_all();
    // Cancel streams after a short grace; store drains in its destructor.
    grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    ticker.join();
    job_ticker.join();
    hub->Tick();
    store->Flush();
  }

  ServerConfig config;
  std::unique_ptr<metrics::Exporter> exporter;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<Hub> hub;
  std::atomic<Hub*> hub_ptr{nullptr};
  Auth auth;
  std::unique_ptr<jobs::Launcher> launcher;  // outlives jobs: destroyed after it
  std::unique_ptr<jobs::Jobs> jobs;
  std::unique_ptr<TelemetryService> telemetry;
  std::unique_ptr<RunsService> runs;
  std::unique_ptr<JobsService> jobs_service;
  std::unique_ptr<HttpServer> http;  // after what its handlers use: destroyed first
  std::unique_ptr<grpc::Server> grpc_server;
  int grpc_port = 0;
  std::thread ticker, job_ticker;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
};

Server::Server(const ServerConfig& config, const Clock& clock)
    : impl_(std::make_unique<Impl>(config, clock)) {}

Server::~Server() {
  Shutdown();
  impl_->hub_ptr = nullptr;
}

int Server::grpc_port() const { return impl_->grpc_port; }
int Server::metrics_port() const { return impl_->MetricsPort(); }
Hub& Server::hub() { return *impl_->hub; }
void Server::Wait() { impl_->grpc_server->Wait(); }
void Server::Shutdown() { impl_->Shutdown(); }

namespace {

bool LoopbackAddress(const sockaddr* a) {
  if (a->sa_family == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr) >> 24) == 127;
  }
  if (a->sa_family == AF_INET6) {
    const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace

ListenCheck CheckListenAddress(const std::string& address) {
  ListenCheck c;
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? "" : address.substr(0, colon);
  const std::string port = colon == std::string::npos ? "" : address.substr(colon + 1);
  const bool port_ok = !port.empty() && port.size() <= 5 &&
                       port.find_first_not_of("0123456789") == std::string::npos && std::stoi(port) <= 65535;
  if (host.empty() || !port_ok || address.find_first_of(", \t") != std::string::npos) {
    c.error = "\"" + address + "\" is not one HOST:PORT address (e.g. 127.0.0.1:7070, [::1]:0)";
    return c;
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0) {
    c.error = "cannot resolve \"" + host + "\" of " + address + ": " + gai_strerror(rc);
    return c;
  }
  c.loopback = true;  // every address the name resolves to: a listener binds them all
  for (addrinfo* a = found; a; a = a->ai_next) c.loopback = c.loopback && LoopbackAddress(a->ai_addr);
  freeaddrinfo(found);
  return c;
}

std::string DefaultTrainer() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  auto trainer = self.parent_path() / "gradwatch-train";
  return std::filesystem::exists(trainer) ? trainer.string() : "";
}

std::string CheckLauncherFlags(const ServerConfig& config) {
  if (config.launcher != "local" && config.launcher != "slurm") return "--launcher " + config.launcher + ": must be local or slurm";
  if (config.launcher != "slurm" && (!config.slurm_partition.empty() || !config.slurm_account.empty() ||
                                     !config.slurm_time.empty() || !config.slurm_options.empty())) {
    return "--slurm-partition, --slurm-account, --slurm-time and --slurm-option need --launcher slurm";
  }
  return jobs::CheckSlurmOptions(SlurmOptionsOf(config));
}

int RunServer(const ServerConfig& config) {
  // Launch and control calls act on the host: until tokens guard them, only loopback.
  for (const auto& [flag, address] : {std::pair{"--listen", config.listen}, {"--metrics-listen", config.metrics_listen}}) {
    if (address.empty()) continue;
    ListenCheck check = CheckListenAddress(address);
    if (!check.error.empty()) {
      std::cerr << "gradwatchd: " << flag << ": " << check.error << "\n";
      return 2;
    }
    if (!check.loopback && config.tokens_file.empty() && !config.allow_remote_without_auth) {
      std::cerr << "gradwatchd: refusing to listen on " << address
                << " (not only loopback) without authentication; pass --tokens FILE, listen on 127.0.0.1, or "
                   "pass --allow-remote-without-auth "
                   "inside a network you control (e.g. a compose network with ports published on loopback)\n";
      return 2;
    }
  }
  // Block the stop signals in every thread; this one waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  SystemClock clock;
  std::unique_ptr<Server> server;
  try {
    server = std::make_unique<Server>(config, clock);
  } catch (const std::exception& e) {
    std::cerr << "gradwatchd: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "gradwatchd: gRPC on " << HostOf(config.listen) << ":" << server->grpc_port();
  if (server->metrics_port() != 0) {
    std::string web = "http://" + HostOf(config.metrics_listen) + ":" +
                      std::to_string(server->metrics_port());
    std::cerr << ", metrics on " << web << "/metrics, live pages on " << web << "/";
  }
  std::cerr << ", data in " << config.data_dir << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "gradwatchd: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", shutting down" << std::endl;
  server->Shutdown();
  return 0;
}

}  // namespace gradwatch::monitor
