#include "gradwatch/detect/attribution.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace gradwatch::detect {
namespace {
constexpr size_t kTopLayers = 3;
}

LayerAttribution::LayerAttribution(std::vector<std::string> names, const Thresholds& t)
    : names_(std::move(names)), t_(t) {}

void LayerAttribution::Score(uint64_t step, const float* norms, size_t n) {
  if (norms == nullptr) n = 0;
  while (layers_.size() < n)
    layers_.push_back({Ewma(t_.spike_alpha, t_.spike_var_alpha, t_.spike_warmup)});
  for (size_t i = 0; i < n; ++i) {
    Layer& layer = layers_[i];
    Take(layer, norms[i]);
    bool departed = layer.z >= t_.attr_z;
    if (departed && !layer.departed) layer.departed_at = step;
    layer.departed = departed;
  }
  scored_ = n;
  last_step_ = step;
  any_scored_ = true;
}

// A norm that is not finite departs at once; one of 0 (a frozen layer) never does.
void LayerAttribution::Take(Layer& layer, float norm) const {
  const bool usable = std::isfinite(norm) && norm > 0;
  layer.log_norm = usable ? std::log(norm) : std::numeric_limits<double>::quiet_NaN();
  if (usable) layer.z = layer.log.Z(layer.log_norm, t_.spike_std_floor);
  else layer.z = std::isfinite(norm) ? 0 : std::numeric_limits<double>::infinity();
}

// A layer that departs while the run is healthy is clipped to the departure level before it is
// learned, so it stays visible as departed for a while instead of becoming the new normal.
void LayerAttribution::Learn() {
  for (size_t i = 0; i < scored_; ++i) {
    double x = layers_[i].log_norm;
    if (std::isnan(x)) continue;
    Ewma& log = layers_[i].log;
    log.Add(log.ready() ? std::fmin(x, log.At(t_.attr_z, t_.spike_std_floor)) : x);
  }
}

void LayerAttribution::Attribute(Event* e) const {
  if (!any_scored_ || e->step != last_step_) return;
  std::vector<size_t> departed = Departed();
  if (departed.empty()) return;
  for (size_t i = 0; i < departed.size() && i < kTopLayers; ++i)
    e->top_layers.push_back(Name(departed[i]));
  // The earliest departure within the lookback (ties: the larger z), else the largest z.
  const size_t* first = nullptr;
  for (const size_t& i : departed) {
    bool recent = e->step - layers_[i].departed_at <= t_.attr_lookback;
    if (recent && (!first || layers_[i].departed_at < layers_[*first].departed_at)) first = &i;
  }
  e->first_layer = Name(first ? *first : departed.front());
}

std::vector<size_t> LayerAttribution::Departed() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < scored_; ++i)
    if (layers_[i].departed) out.push_back(i);
  std::stable_sort(out.begin(), out.end(),
                   [this](size_t a, size_t b) { return layers_[a].z > layers_[b].z; });
  return out;
}

std::string LayerAttribution::Name(size_t i) const {
  return i < names_.size() ? names_[i] : "layer" + std::to_string(i);
}

}  // namespace gradwatch::detect
