// Names the layers behind an event. Each layer keeps an EWMA of its log grad norm; every step
// scores each layer's z against it; a layer has "departed" while z ≥ attr_z, and remembers the
// step its current departure began. At an event, top_layers are the departed layers with the
// largest z, and first_layer is the one whose departure began earliest within attr_lookback
// steps (else the largest). A non-finite layer norm counts as z = +inf. O(layers) per step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gradwatch/detect/event.h"
#include "gradwatch/detect/stats.h"
#include "gradwatch/detect/thresholds.h"

namespace gradwatch::detect {

class LayerAttribution {
 public:
  LayerAttribution(std::vector<std::string> names, const Thresholds& t);
  // Scores one step's per-layer norms against what was learned so far. n may differ from the
  // number of names; missing names are "layer<i>".
  void Score(uint64_t step, const float* norms, size_t n);
  // Learns from the last scored step's norms (the logarithms Score took). Call for healthy steps
  // only.
  void Learn();
  // Fills e->top_layers and e->first_layer from the last scored step, if e is for that step.
  void Attribute(Event* e) const;
  double z(size_t layer) const { return layer < layers_.size() ? layers_[layer].z : 0; }

 private:
  struct Layer {
    Ewma log;
    double log_norm = 0;  // of the last scored norm; NaN when it was not finite or not > 0
    double z = 0;
    bool departed = false;
    uint64_t departed_at = 0;  // the step this departure began
  };
  void Take(Layer& layer, float norm) const;  // the layer's log_norm and z for this norm
  std::vector<size_t> Departed() const;  // departed layers of the last step, largest z first
  std::string Name(size_t i) const;

  std::vector<std::string> names_;
  Thresholds t_;
  std::vector<Layer> layers_;
  size_t scored_ = 0;  // layers in the last scored step
  uint64_t last_step_ = 0;
  bool any_scored_ = false;
};

}  // namespace gradwatch::detect
