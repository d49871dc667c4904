// Gradient statistics for one step: the global L2 norm and one L2 norm per parameter
// tensor, from one fused computation (at::_foreach_norm) and one device-to-host copy.
// Never a .item() per parameter: on CUDA each would be a synchronising copy.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace gradwatch::torchmon {

struct GradStats {
  double global_norm = 0;          // sqrt(sum of squared layer norms); NaN/Inf propagate
  std::vector<float> layer_norms;  // one per tensor, in the order given; 0 for a missing grad
};

// `params` in a fixed order (the order of the hello's layer names).
GradStats ComputeGradStats(const std::vector<at::Tensor>& params);

// As above, and the values of `extra` (a 1-D tensor on the gradients' device) ride along in
// the same device-to-host copy, as float64, into *extra_values.
GradStats ComputeGradStats(const std::vector<at::Tensor>& params, const at::Tensor& extra,
                           std::vector<double>* extra_values);

// The slow way, one .item() per parameter: only for the benchmark that compares them.
GradStats ComputeGradStatsPerItem(const std::vector<at::Tensor>& params);

}  // namespace gradwatch::torchmon
