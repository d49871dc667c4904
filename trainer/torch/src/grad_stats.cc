#include "gradwatch/torch/grad_stats.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>

namespace gradwatch::torchmon {

GradStats ComputeGradStats(const std::vector<at::Tensor>& params) {
  GradStats out;
  out.layer_norms.assign(params.size(), 0.f);
  std::vector<at::Tensor> grads;
  std::vector<size_t> index;  // position in params of each grad
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& g = params[i].grad();
    if (g.defined()) {
      grads.push_back(g);
      index.push_back(i);
    }
  }
  if (grads.empty()) return out;
  std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);  // one fused kernel on CUDA
  std::vector<float> values(norms.size());
  if (grads.front().is_cpu()) {
    // Already in host memory: read each scalar, no stack or copy needed.
    for (size_t k = 0; k < norms.size(); ++k) values[k] = norms[k].item().toFloat();
  } else {
    // Stacked in float32 on the device, then the single device-to-host copy.
    at::Tensor host = at::stack(norms).to(at::kFloat).to(at::kCPU);
    std::memcpy(values.data(), host.data_ptr<float>(), values.size() * sizeof(float));
  }
  double sq = 0;
  for (size_t k = 0; k < index.size(); ++k) {
    out.layer_norms[index[k]] = values[k];
    sq += double(values[k]) * values[k];
  }
  out.global_norm = std::sqrt(sq);
  return out;
}

GradStats ComputeGradStatsPerItem(const std::vector<at::Tensor>& params) {
  GradStats out;
  double sq = 0;
  for (const auto& p : params) {
    const at::Tensor& g = p.grad();
    float n = g.defined() ? g.norm().item<float>() : 0.f;
    out.layer_norms.push_back(n);
    sq += double(n) * n;
  }
  out.global_norm = std::sqrt(sq);
  return out;
}

}  // namespace gradwatch::torchmon
