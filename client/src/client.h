// What every verb of `gradwatch` shares: the global flags, the failure that becomes exit
// code 1, and the connection to gradwatchd (Runs and Jobs stubs, token, TLS).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <ostream>
#include <string>
#include <type_traits>

#include "gradwatch/common/format.h"
#include "gradwatch/reporter/channel.h"
#include "gradwatch/v1/jobs.grpc.pb.h"
#include "gradwatch/v1/runs.grpc.pb.h"

namespace gradwatch::cli {

struct Globals {
  std::string server = "127.0.0.1:7070";
  std::string token;
  reporter::TlsFiles tls;
  bool json_output = false;
  int timeout_ms = 10'000;
  // Where the live view draws (with its own escape codes; it makes its untrusted text
  // printable itself) and whether that is a terminal. Everything else goes through
  // PrintableStream (gradwatch/common/printable.h).
  std::ostream* view_out = nullptr;
  bool view_out_tty = false;
  std::ostream* view_err = nullptr;
  bool view_err_tty = false;
};

// A failed call, already explained; becomes exit code 1.
struct Failure {
  std::string message;
};

// Numbers in text output: 4 significant digits.
inline std::string Num(double v) { return FormatNumber(v, 4); }

class Client {
 public:
  explicit Client(const Globals& g) : g_(g) {
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    try {
      credentials = reporter::ChannelCredentials(g.tls);
    } catch (const std::exception& e) {
      throw Failure{e.what()};
    }
    auto channel = grpc::CreateChannel(g.server, credentials);
    stub_ = v1::Runs::NewStub(channel);
    jobs_ = v1::Jobs::NewStub(channel);
  }

  // One unary call of the Runs or the Jobs service; throws Failure with `what` and the
  // reason (and what to check when the monitor cannot be reached).
  template <typename Req, typename Resp, typename Stub>
  Resp Call(grpc::Status (Stub::*fn)(grpc::ClientContext*, const Req&, Resp*), const Req& req, const char* what,
            int timeout_ms = 0) {
    Resp resp;
    grpc::Status status = TryCall(fn, req, &resp, timeout_ms);
    if (!status.ok()) throw Failure{std::string(what) + ": " + Explain(status)};
    return resp;
  }

  // The same, returning the status instead of throwing.
  template <typename Req, typename Resp, typename Stub>
  grpc::Status TryCall(grpc::Status (Stub::*fn)(grpc::ClientContext*, const Req&, Resp*), const Req& req, Resp* resp,
                       int timeout_ms = 0) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(timeout_ms ? timeout_ms : g_.timeout_ms));
    Authorize(ctx);
    if constexpr (std::is_same_v<Stub, v1::Jobs::Stub>) {
      return (jobs_.get()->*fn)(&ctx, req, resp);
    } else {
      return (stub_.get()->*fn)(&ctx, req, resp);
    }
  }

  std::string Explain(const grpc::Status& status) const {
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return status.error_message();
    return "cannot reach gradwatchd at " + g_.server + " (" + status.error_message() +
           "); is it running? set --server or GRADWATCH_SERVER" +
           (g_.tls.enabled() ? "" : "; if it uses TLS, pass --tls-ca");
  }

  v1::Runs::Stub& stub() { return *stub_; }
  v1::Jobs::Stub& jobs() { return *jobs_; }
  void Authorize(grpc::ClientContext& ctx) const {
    if (!g_.token.empty()) ctx.AddMetadata("authorization", "Bearer " + g_.token);
  }

 private:
  const Globals& g_;
  std::unique_ptr<v1::Runs::Stub> stub_;
  std::unique_ptr<v1::Jobs::Stub> jobs_;
};

}  // namespace gradwatch::cli
