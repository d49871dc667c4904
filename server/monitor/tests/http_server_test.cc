// The HTTP transport: a real HttpServer (civetweb) on 127.0.0.1:0 over a hub with no runs:
// listen strings, busy ports, body limits on the wire, the Chart.js warning, TLS key files;
// and the per-client bound it applies.
#include "http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gradwatch/metrics/exporter.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"

namespace gradwatch::monitor {
namespace {

std::filesystem::path TestDir() {
  auto dir = std::filesystem::temp_directory_path() /
             ("gradwatch-http-server-" + std::to_string(::getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(ClientLimiter, refuses_a_client_at_its_bound_and_admits_others) {
  ClientLimiter limiter(2);
  EXPECT_TRUE(limiter.Acquire("10.0.0.1"));
  EXPECT_TRUE(limiter.Acquire("10.0.0.1"));
  EXPECT_FALSE(limiter.Acquire("10.0.0.1"));
  EXPECT_TRUE(limiter.Acquire("10.0.0.2"));
  limiter.Release("10.0.0.1");
  EXPECT_EQ(limiter.InProgress("10.0.0.1"), 1);
  EXPECT_TRUE(limiter.Acquire("10.0.0.1"));
}

// The transport: a real HttpServer on 127.0.0.1:0 over a hub with no runs.
class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir();
    store_ = std::make_unique<store::Store>(store::StoreOptions{(dir_ / "gradwatch.db").string()});
    hub_ = std::make_unique<Hub>(HubOptions{}, *store_, exporter_, clock_);
    options_.listen = "127.0.0.1:0";
    options_.chartjs = (dir_ / "chart.min.js").string();
    std::ofstream(options_.chartjs) << "// chart";
  }
  void TearDown() override { hub_.reset(); }
  std::unique_ptr<HttpServer> Start() {
    return std::make_unique<HttpServer>(options_, exporter_.registry(), *hub_, *store_);
  }
  std::string StartError() {
    try {
      Start();
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(started)";
  }

  std::filesystem::path dir_;
  FakeClock clock_;
  metrics::Exporter exporter_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Hub> hub_;
  HttpOptions options_;
};

// Whether `answer` holds a whole response: headers and Content-Length bytes of body.
bool Complete(const std::string& answer) {
  size_t end = answer.find("\r\n\r\n"), length = answer.find("Content-Length: ");
  return end != std::string::npos && length != std::string::npos && length < end &&
         answer.size() >= end + 4 + std::stoul(answer.substr(length + 16));
}

// Sends `request` to 127.0.0.1:port and returns the server's answer (read until it is
// complete: civetweb may drain a refused body before it closes).
std::string Exchange(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    for (ssize_t n; !Complete(answer) && (n = recv(fd, buf, sizeof buf, 0)) > 0;) {
      answer.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return answer;
}

TEST_F(HttpServerTest, refuses_a_listen_list) {
  options_.listen = "127.0.0.1:0,0.0.0.0:0";
  std::string error = StartError();
  EXPECT_NE(error.find("\"127.0.0.1:0,0.0.0.0:0\" is a list"), std::string::npos) << error;
}

TEST_F(HttpServerTest, refuses_civetweb_port_suffixes_and_hostnames) {
  for (const char* listen : {"127.0.0.1:0s", "127.0.0.1:0r", "127.0.0.1:443x", "+0", "0", "example.com:80",
                             "127.0.0.1", "127.0.0.1:65536", "127.1:0"}) {
    options_.listen = listen;
    std::string error = StartError();
    EXPECT_NE(error.find(std::string("HTTP listen address \"") + listen + "\""), std::string::npos) << error;
  }
  options_.listen = "localhost:0";
  EXPECT_GT(Start()->port(), 0);
}

TEST_F(HttpServerTest, says_the_address_is_in_use_when_another_process_holds_the_port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  options_.listen = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  EXPECT_EQ(StartError(), "cannot serve HTTP on " + options_.listen + ": address in use (another gradwatchd?)");
  close(fd);
}

TEST_F(HttpServerTest, warns_about_a_missing_chartjs_file_and_serves_anyway) {
  options_.chartjs = (dir_ / "nosuch.js").string();
  ::testing::internal::CaptureStderr();
  auto server = Start();
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find(options_.chartjs), std::string::npos) << log;
  EXPECT_NE(log.find("install libjs-chart.js"), std::string::npos) << log;
  EXPECT_NE(log.find("--chartjs"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  EXPECT_EQ(Exchange(server->port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
}

TEST_F(HttpServerTest, answers_bad_requests_and_keeps_serving) {
  auto server = Start();
  std::string bad = Exchange(server->port(),
                             "POST /api/v1/alerts/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: 14\r\n\r\n{\"alerts\":[1]}");
  EXPECT_EQ(bad.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << bad;
  EXPECT_NE(bad.find("alerts[0] must be an object"), std::string::npos) << bad;
  std::string metrics = Exchange(server->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(metrics.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << metrics;
  EXPECT_NE(metrics.find("Connection: close\r\n"), std::string::npos);
}

TEST_F(HttpServerTest, refuses_a_declared_body_over_one_mebibyte_before_reading_it) {
  auto server = Start();
  std::string answer = Exchange(server->port(),
                                "POST /api/v1/alerts/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                "Content-Length: 2000000\r\n\r\n{");
  EXPECT_EQ(answer.rfind("HTTP/1.1 413 Payload Too Large\r\n", 0), 0u) << answer;
  EXPECT_NE(answer.find("2000000 bytes"), std::string::npos) << answer;
}

TEST_F(HttpServerTest, refuses_a_certificate_without_its_key) {
  options_.tls_cert = (dir_ / "cert.pem").string();
  options_.scratch_dir = dir_.string();
  EXPECT_NE(StartError().find("needs both a certificate and a key"), std::string::npos);
  options_.tls_key = (dir_ / "nosuch.key").string();
  EXPECT_NE(StartError().find("nosuch.key: cannot read"), std::string::npos) << StartError();
}

// Where civetweb's TLS would crash on the first connection (Debian bookworm: civetweb 1.15
// with OpenSSL 3), the server refuses TLS at construction and writes no key file.
TEST_F(HttpServerTest, serves_tls_from_a_pem_only_its_owner_can_read_or_says_why_it_cannot) {
  std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 1 -keyout " +
                    (dir_ / "key.pem").string() + " -out " + (dir_ / "cert.pem").string() + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "no openssl to make a certificate";
  options_.tls_cert = (dir_ / "cert.pem").string();
  options_.tls_key = (dir_ / "key.pem").string();
  options_.scratch_dir = (dir_ / "scratch").string();
  auto pem = dir_ / "scratch" / "http-tls.pem";
  std::unique_ptr<HttpServer> server;
  try {
    server = Start();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot serve TLS on the HTTP port: civetweb 1.15 calls "
                                         "SSL_get_peer_certificate"), std::string::npos) << e.what();
    EXPECT_FALSE(std::filesystem::exists(pem));
    return;
  }
  EXPECT_GT(server->port(), 0);
  struct stat st {};
  ASSERT_EQ(stat(pem.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  server.reset();
  EXPECT_FALSE(std::filesystem::exists(pem));
}

}  // namespace
}  // namespace gradwatch::monitor
