#include "gradwatch/torch/grad_stats.h"

#include <ATen/ATen.h>

#include <cmath>

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
  // One kernel launch for all norms, norms in float32 to make the one copy small.
  at::Tensor norms = at::stack(at::_foreach_norm(grads, 2)).to(at::kFloat);
  at::Tensor host = norms.to(at::kCPU);  // the single device-to-host copy
  const float* p = host.data_ptr<float>();
  double sq = 0;
  for (size_t k = 0; k < index.size(); ++k) {
    out.layer_norms[index[k]] = p[k];
    sq += double(p[k]) * p[k];
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
