// Reading Alertmanager's webhook payload (version 4) without exceptions: what each alert
// says about a run, or where the payload is wrong. Used by the HTTP webhook handler.
#pragma once

#include <string>
#include <vector>

namespace gradwatch::monitor {

// One alert of the payload, with Alertmanager's defaults filled in.
struct Alert {
  std::string run_id;                 // labels.run_id; "" when absent
  std::string alertname = "alert";    // labels.alertname
  std::string severity = "warning";   // labels.severity
  std::string status = "firing";      // status: "firing" or "resolved"
  std::string summary;                // annotations.summary, else annotations.description
};

// Parses `body` into `alerts`. Returns "" or one line saying what is wrong and where
// ("webhook body: alerts[2].labels.run_id must be a string, got number"); `alerts` is
// then incomplete. Absent or null fields take their defaults; other fields are ignored.
std::string ParseAlertmanagerPayload(const std::string& body, std::vector<Alert>* alerts);

}  // namespace gradwatch::monitor
