// Building the HTTP port's replies (http_handlers.cc, http_api.cc). Private to the monitor.
#pragma once

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "http_handlers.h"

namespace gradwatch::monitor {

using nlohmann::json;

// Never throws on invalid UTF-8 (a run id or a quoted request part may hold any bytes).
inline std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

inline HttpResponse Reply(int status, std::string type, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = std::move(type);
  r.body = std::move(body);
  return r;
}

inline HttpResponse JsonReply(const json& j) { return Reply(200, "application/json", Dump(j)); }

// Received text quoted for a message: one line, at most 64 bytes of it.
inline std::string Quote(const std::string& s) { return Dump(json(s.size() > 64 ? s.substr(0, 64) + "..." : s)); }

// JSON has no NaN or infinity: they become null.
inline json Num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// The JSON API under /api/v1/runs: the runs, and a run's steps, evals, events and commands
// after a step (http_api.cc).
HttpResponse RunsApi(const HttpRequest& req, const HttpContext& ctx);

}  // namespace gradwatch::monitor
