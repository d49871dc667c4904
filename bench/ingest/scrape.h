// Reads the monitor's /metrics endpoint: one Prometheus histogram, so that the bench can
// tell time spent handling a report inside the monitor from time spent getting it there
// and back, or the sum of a metric's samples (a gauge, a counter over its labels).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gradwatch::bench {

struct Histogram {
  std::vector<std::pair<double, double>> buckets;  // (upper bound, cumulative count), ascending

  double count() const { return buckets.empty() ? 0 : buckets.back().second; }
  // Observations since `earlier`, a scrape of the same histogram.
  Histogram Since(const Histogram& earlier) const;
  // The upper bound of the bucket that holds quantile q (0..1); +inf past the last bound.
  double Quantile(double q) const;
};

// GET http://127.0.0.1:<port>/metrics and parse the buckets of `name` (a histogram with
// no labels). nullopt when the endpoint cannot be read or has no such histogram.
std::optional<Histogram> ScrapeHistogram(int port, const std::string& name);

// The body of GET http://127.0.0.1:<port>/metrics, "" when it cannot be read.
std::string ScrapeMetrics(int port);
// The sum of the samples of metric `name` in the exposition `text` whose label set contains
// `labels` (e.g. `type="step"`; "" = every sample); nullopt when there is none.
std::optional<double> SumSamples(const std::string& text, const std::string& name,
                                 const std::string& labels = "");

}  // namespace gradwatch::bench
