#include "gradwatch/torch/grad_stats.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>

namespace gradwatch::torchmon {

GradStats ComputeGradStats(const std::vector<at::Tensor>& params) {
  return ComputeGradStats(params, at::Tensor(), nullptr);
}

GradStats ComputeGradStats(const std::vector<at::Tensor>& params, const at::Tensor& extra,
                           std::vector<double>* extra_values) {
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
  const int64_t n_extra = extra.defined() ? extra.numel() : 0;
  std::vector<at::Tensor> norms;
  if (!grads.empty()) norms = at::_foreach_norm(grads, 2);  // one fused kernel on CUDA
  std::vector<double> values(norms.size() + static_cast<size_t>(n_extra));
  const bool on_cpu = grads.empty() ? (!extra.defined() || extra.is_cpu()) : grads.front().is_cpu();
  if (on_cpu) {
    // Already in host memory: read each scalar, no stack or copy needed.
    for (size_t k = 0; k < norms.size(); ++k) values[k] = norms[k].item().toFloat();
    if (n_extra > 0) {
      at::Tensor e = extra.to(at::kDouble).contiguous();
      std::memcpy(values.data() + norms.size(), e.data_ptr<double>(), static_cast<size_t>(n_extra) * sizeof(double));
    }
  } else {
    // Stacked on the device (norms in float32, as the report carries them), then the single
    // device-to-host copy.
    std::vector<at::Tensor> parts;
    if (!norms.empty()) parts.push_back(at::stack(norms).to(at::kFloat).to(at::kDouble));
    if (n_extra > 0) parts.push_back(extra.reshape(-1).to(at::kDouble));
    at::Tensor host = at::cat(parts).to(at::kCPU);
    std::memcpy(values.data(), host.data_ptr<double>(), values.size() * sizeof(double));
  }
  double sq = 0;
  for (size_t k = 0; k < index.size(); ++k) {
    out.layer_norms[index[k]] = static_cast<float>(values[k]);
    sq += values[k] * values[k];
  }
  out.global_norm = std::sqrt(sq);
  if (extra_values) extra_values->assign(values.begin() + static_cast<std::ptrdiff_t>(norms.size()), values.end());
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
