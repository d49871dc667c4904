#include "scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <limits>
#include <sstream>

namespace gradwatch::bench {
namespace {

// The body of an HTTP/1.0 GET to 127.0.0.1, "" on any failure.
std::string HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buf[16384];
      for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) response.append(buf, n);
    }
  }
  ::close(fd);
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

}  // namespace

Histogram Histogram::Since(const Histogram& earlier) const {
  Histogram out = *this;
  for (size_t i = 0; i < out.buckets.size() && i < earlier.buckets.size(); ++i) {
    out.buckets[i].second -= earlier.buckets[i].second;
  }
  return out;
}

double Histogram::Quantile(double q) const {
  for (const auto& [bound, cumulative] : buckets) {
    if (cumulative >= q * count()) return bound;
  }
  return std::numeric_limits<double>::infinity();
}

std::string ScrapeMetrics(int port) { return HttpGet(port, "/metrics"); }

std::optional<double> SumSamples(const std::string& text, const std::string& name, const std::string& labels) {
  std::istringstream lines(text);
  std::optional<double> sum;
  for (std::string line; std::getline(lines, line);) {
    // e.g. gradwatch_messages_received_total{type="step"} 42, or gradwatch_store_lag_records 0
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    char next = line[name.size()];
    if (next != ' ' && next != '{') continue;
    size_t value = next == '{' ? line.find("} ", name.size()) : name.size();
    if (value == std::string::npos) continue;
    if (!labels.empty() && line.substr(name.size(), value - name.size()).find(labels) == std::string::npos) continue;
    sum = sum.value_or(0) + std::strtod(line.c_str() + value + (next == '{' ? 2 : 1), nullptr);
  }
  return sum;
}

std::optional<Histogram> ScrapeHistogram(int port, const std::string& name) {
  std::istringstream text(HttpGet(port, "/metrics"));
  const std::string prefix = name + "_bucket{le=\"";
  Histogram h;
  for (std::string line; std::getline(text, line);) {
    if (line.rfind(prefix, 0) != 0) continue;  // e.g. gradwatch_x_bucket{le="0.001"} 42
    size_t close = line.find("\"}", prefix.size());
    if (close == std::string::npos) continue;
    double bound = std::strtod(line.substr(prefix.size(), close - prefix.size()).c_str(), nullptr);
    h.buckets.emplace_back(bound, std::strtod(line.c_str() + close + 2, nullptr));
  }
  if (h.buckets.empty()) return std::nullopt;
  return h;
}

}  // namespace gradwatch::bench
