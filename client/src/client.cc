#include "client.h"

#include <nlohmann/json.hpp>

namespace gradwatch::cli {
namespace {

using nlohmann::json;

const char* SeverityName(v1::Severity s) {
  return s == v1::SEVERITY_CRITICAL ? "critical" : s == v1::SEVERITY_WARNING ? "warning" : "info";
}

}  // namespace

void PrintEvents(const v1::ListEventsResponse& resp, const Globals& g, std::ostream& out) {
  for (const auto& e : resp.events()) {
    if (g.json_output) {
      out << json{{"step", e.step()}, {"kind", e.kind()}, {"severity", SeverityName(e.severity())},
                  {"message", e.message()}, {"value", e.value()}, {"first_layer", e.first_layer()},
                  {"incident", e.incident_id()}}
                 .dump()
          << "\n";
    } else {
      out << "step " << e.step() << "  " << SeverityName(e.severity()) << "  " << e.kind() << "  "
          << e.message() << "\n";
    }
  }
}

}  // namespace gradwatch::cli
