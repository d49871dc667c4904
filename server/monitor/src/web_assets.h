// The embedded live pages, served by http.cc. They chart with Chart.js (Debian's
// libjs-chart.js, served at /static/chart.min.js) and poll the JSON API.
#pragma once

namespace gradwatch::monitor {

extern const char* const kRunsPage;  // "/": every run with its state
extern const char* const kRunPage;   // "/runs/RUN": one run, live

}  // namespace gradwatch::monitor
