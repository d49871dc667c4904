#include "http.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dlfcn.h>
#include <prometheus/registry.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <vector>

#include "gradwatch/common/file.h"
#include "http_handlers.h"

namespace gradwatch::monitor {
namespace {

// A listen string split and checked: one host:port, nothing civetweb would read as more.
struct Endpoint {
  std::string host;  // as given; "[::1]" keeps its brackets
  int port = 0;
  bool v6 = false;
  std::string ip;  // the address to bind: localhost is 127.0.0.1, brackets dropped
};

Endpoint ParseListen(const std::string& listen) {
  auto refuse = [&](const std::string& why) {
    return std::runtime_error("HTTP listen address \"" + listen + "\" " + why +
                              "; expected one host:port, the host an IP address or localhost (e.g. 127.0.0.1:9464)");
  };
  if (listen.find_first_of(", \t") != std::string::npos) throw refuse("is a list: lists are not accepted");
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw refuse("has no port");
  Endpoint e;
  e.host = listen.substr(0, colon);
  std::string port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) > 65535) {
    throw refuse("has port \"" + port + "\", not a number 0..65535 (civetweb's suffixes such as s or r are not accepted)");
  }
  e.port = std::stoi(port);
  e.v6 = e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']';
  e.ip = e.host == "localhost" ? "127.0.0.1" : e.v6 ? e.host.substr(1, e.host.size() - 2) : e.host;
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(e.v6 ? AF_INET6 : AF_INET, e.ip.c_str(), buf) != 1) {
    throw refuse("has host \"" + e.host + "\", not an IP address or localhost");
  }
  if (e.v6 && !mg_check_feature(MG_FEATURES_IPV6)) {
    throw refuse("is IPv6, which this civetweb library was built without: listen on an IPv4 address");
  }
  return e;
}

// Why binding `e` fails, by trying it the way civetweb does; "" when it binds now.
std::string BindError(const Endpoint& e) {
  int fd = socket(e.v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return std::strerror(errno);
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_storage sa{};
  if (e.v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&sa);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(e.port));
    inet_pton(AF_INET6, e.ip.c_str(), &a->sin6_addr);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&sa);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(e.port));
    inet_pton(AF_INET, e.ip.c_str(), &a->sin_addr);
  }
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&sa), e.v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  int err = errno;
  close(fd);
  if (rc == 0) return "";
  if (err == EADDRINUSE) return "address in use (another gradwatchd?)";
  if (err == EADDRNOTAVAIL) return "not an address of this host";
  if (err == EACCES) return "permission denied (ports below 1024 need privileges)";
  return std::strerror(err);
}

// Why civetweb's TLS cannot be used here, or "". civetweb 1.15 (Debian bookworm's) dlopens
// libssl.so and, after every handshake, calls SSL_get_peer_certificate, which OpenSSL 3
// exports only as SSL_get1_peer_certificate: the pointer stays NULL and the first https
// connection crashes the process (civetweb issue #1334). Later civetwebs refuse to start.
std::string TlsLibraryProblem() {
  if (!mg_check_feature(MG_FEATURES_TLS)) {
    return "this civetweb library was built without TLS (mg_check_feature(MG_FEATURES_TLS) is 0)";
  }
  void* ssl = dlopen("libssl.so", RTLD_LAZY | RTLD_LOCAL);
  if (!ssl) return "civetweb loads libssl.so at run time and there is none (install libssl-dev)";
  bool old_api = dlsym(ssl, "SSL_get_peer_certificate") != nullptr;
  dlclose(ssl);
  if (old_api || std::string(mg_version()) != "1.15") return "";
  return "civetweb 1.15 calls SSL_get_peer_certificate, which this OpenSSL (3.x) no longer exports, "
         "so the first https connection would crash the monitor (civetweb issue #1334)";
}

// The one PEM file civetweb reads for TLS, or "" without TLS. See HttpOptions::tls_cert.
std::string WriteTlsFile(const HttpOptions& o) {
  if (o.tls_cert.empty() && o.tls_key.empty()) return "";
  if (o.tls_cert.empty() || o.tls_key.empty()) {
    throw std::runtime_error("TLS on the HTTP port needs both a certificate and a key (--metrics-tls-cert, --metrics-tls-key)");
  }
  std::string pem = ReadFileOrThrow(o.tls_key, "HTTP TLS key");
  pem += "\n" + ReadFileOrThrow(o.tls_cert, "HTTP TLS certificate");
  if (std::string problem = TlsLibraryProblem(); !problem.empty()) {
    throw std::runtime_error("cannot serve TLS on the HTTP port: " + problem +
                             "; put a TLS-terminating proxy in front of a loopback --metrics-listen instead");
  }
  if (o.scratch_dir.empty()) throw std::runtime_error("TLS on the HTTP port needs a scratch folder for its key file");
  std::filesystem::create_directories(o.scratch_dir);
  auto path = std::filesystem::path(o.scratch_dir) / "http-tls.pem";
  WriteFileAtomically(path, pem, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path.string();
}

void WarnIfChartJsMissing(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return;
  std::cerr << "gradwatchd: warning: Chart.js not found at " << path
            << ": the live pages will draw no charts; install libjs-chart.js (scripts/install-deps) or pass --chartjs FILE"
            << std::endl;
}

std::string HeaderSafe(std::string s) {
  for (char& c : s) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  return s;
}

void Send(mg_connection* conn, const HttpResponse& r) {
  std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + ReasonPhrase(r.status) +
                     "\r\nContent-Type: " + HeaderSafe(r.content_type) +
                     "\r\nContent-Length: " + std::to_string(r.body.size()) +
                     "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
  for (const auto& [name, value] : r.headers) head += HeaderSafe(name) + ": " + HeaderSafe(value) + "\r\n";
  head += "Connection: close\r\n\r\n";
  mg_write(conn, head.data(), head.size());
  mg_write(conn, r.body.data(), r.body.size());
}

// The body, at most kMaxHttpBodyBytes; a refusal when it is declared or turns out larger.
std::optional<HttpResponse> ReadBody(mg_connection* conn, const mg_request_info* info, std::string* body) {
  if (auto refused = RefuseBodyLength(info->content_length)) return refused;
  char buf[16384];
  for (int n; (n = mg_read(conn, buf, sizeof buf)) > 0;) {
    body->append(buf, static_cast<size_t>(n));
    if (body->size() > kMaxHttpBodyBytes) {
      return JsonError(413, "request body longer than " + std::to_string(kMaxHttpBodyBytes) +
                                " bytes (1 MiB) refused while reading it");
    }
  }
  return std::nullopt;
}

}  // namespace

struct HttpServer::Impl {
  HttpContext context;
  ClientLimiter limiter;
  std::string tls_file;
  int requests_per_client;
  mg_context* ctx = nullptr;
  int port = 0;

  Impl(const HttpOptions& o, std::shared_ptr<prometheus::Registry> registry, Hub& hub, const store::Store& store)
      : limiter(o.max_requests_per_client), requests_per_client(o.max_requests_per_client) {
    context.metrics = std::move(registry);
    context.hub = &hub;
    context.store = &store;
    context.auth = o.auth;
    context.chartjs = o.chartjs;
    Endpoint endpoint = ParseListen(o.listen);
    tls_file = WriteTlsFile(o);
    WarnIfChartJsMissing(o.chartjs);
    mg_init_library(tls_file.empty() ? 0 : MG_FEATURES_TLS);
    try {
      Start(o, endpoint);
    } catch (...) {
      Stop();
      throw;
    }
  }

  ~Impl() { Stop(); }

  void Stop() {
    if (ctx) mg_stop(ctx);
    ctx = nullptr;
    mg_exit_library();
    std::error_code ec;
    if (!tls_file.empty()) std::filesystem::remove(tls_file, ec);
  }

  void Start(const HttpOptions& o, const Endpoint& endpoint) {
    std::string ports = endpoint.host + ":" + std::to_string(endpoint.port) + (tls_file.empty() ? "" : "s");
    std::vector<std::string> kv = {
        "listening_ports", ports, "num_threads", std::to_string(o.threads),
        "request_timeout_ms", std::to_string(o.request_timeout_ms), "enable_keep_alive", "no",
        "listen_backlog", "1024", "connection_queue", "1024"};
    if (!tls_file.empty()) kv.insert(kv.end(), {"ssl_certificate", tls_file, "ssl_protocol_version", "4"});
    std::vector<const char*> options;
    for (const auto& s : kv) options.push_back(s.c_str());
    options.push_back(nullptr);
    mg_callbacks callbacks{};
    callbacks.begin_request = &Impl::OnRequest;
    callbacks.connection_close = &Impl::OnClose;
    mg_init_data init{};
    init.callbacks = &callbacks;
    init.user_data = this;
    init.configuration_options = options.data();
    char text[256] = "";
    mg_error_data error{};
    error.text = text;
    error.text_buffer_size = sizeof text;
    ctx = mg_start2(&init, &error);
    if (!ctx) {
      std::string why = tls_file.empty() ? BindError(endpoint) : "";
      throw std::runtime_error("cannot serve HTTP on " + o.listen + ": " + (why.empty() ? "civetweb: " + std::string(text) : why));
    }
    CheckBound(o, endpoint, !tls_file.empty());
  }

  // civetweb must have bound exactly the one address asked for.
  void CheckBound(const HttpOptions& o, const Endpoint& endpoint, bool tls) {
    mg_server_port bound[4];
    int n = mg_get_server_ports(ctx, 4, bound);
    if (n != 1 || bound[0].is_ssl != (tls ? 1 : 0) || bound[0].protocol != (endpoint.v6 ? 2 : 1) ||
        (endpoint.port != 0 && bound[0].port != endpoint.port)) {
      throw std::runtime_error("HTTP on " + o.listen + ": civetweb bound " + std::to_string(n) +
                               " ports, the first " + (n > 0 ? std::to_string(bound[0].port) : "none") +
                               ", not the one address asked for");
    }
    port = bound[0].port;
  }

  // civetweb's begin_request: answers every request, so civetweb routes nothing itself.
  static int OnRequest(mg_connection* conn) {
    auto* self = static_cast<Impl*>(mg_get_user_context_data(conn));
    try {
      return self->Answer(conn);
    } catch (const std::exception& e) {
      std::cerr << "gradwatchd: HTTP request failed: " << e.what() << std::endl;
    } catch (...) {
      std::cerr << "gradwatchd: HTTP request failed: an exception that is not a std::exception" << std::endl;
    }
    // Built without allocating: the failure may have been an allocation.
    static const char kError[] =
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 28\r\n"
        "Connection: close\r\n\r\n{\"error\": \"internal error\"}\n";
    mg_write(conn, kError, sizeof kError - 1);
    return 500;
  }

  int Answer(mg_connection* conn) {
    const mg_request_info* info = mg_get_request_info(conn);
    if (!limiter.Acquire(info->remote_addr)) {
      HttpResponse busy = JsonError(429, std::string("client ") + info->remote_addr + " has " +
                                             std::to_string(requests_per_client) + " requests in progress already");
      busy.headers.emplace_back("Retry-After", "1");
      Send(conn, busy);
      return busy.status;
    }
    mg_set_user_connection_data(conn, new std::string(info->remote_addr));  // released in OnClose
    HttpRequest request;
    request.method = info->request_method ? info->request_method : "";
    request.path = info->local_uri ? info->local_uri : "";
    request.query = info->query_string ? info->query_string : "";
    request.tls = info->is_ssl != 0;
    for (int i = 0; i < info->num_headers; ++i) {
      request.headers.emplace_back(info->http_headers[i].name, info->http_headers[i].value);
    }
    std::optional<HttpResponse> refused = ReadBody(conn, info, &request.body);
    HttpResponse response = refused ? *refused : HandleHttp(request, context);
    Send(conn, response);
    return response.status;
  }

  static void OnClose(const mg_connection* conn) {
    auto* address = static_cast<std::string*>(mg_get_user_connection_data(conn));
    if (!address) return;
    static_cast<Impl*>(mg_get_user_context_data(conn))->limiter.Release(*address);
    delete address;
    mg_set_user_connection_data(conn, nullptr);
  }
};

HttpServer::HttpServer(const HttpOptions& options, std::shared_ptr<prometheus::Registry> registry, Hub& hub,
                       const store::Store& store)
    : impl_(std::make_unique<Impl>(options, std::move(registry), hub, store)) {}

HttpServer::~HttpServer() = default;

int HttpServer::port() const { return impl_->port; }

bool ClientLimiter::Acquire(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(address);
  if (limit_ > 0 && it != counts_.end() && it->second >= limit_) return false;
  ++counts_[address];
  return true;
}

void ClientLimiter::Release(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(address);
  if (it != counts_.end() && --it->second <= 0) counts_.erase(it);
}

int ClientLimiter::InProgress(const std::string& address) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(address);
  return it == counts_.end() ? 0 : it->second;
}

}  // namespace gradwatch::monitor
