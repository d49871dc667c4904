#include "jaccard.h"

#include <torch/utils.h>

namespace gradwatch::train {

torch::Tensor jaccard_coef(const torch::Tensor& y_true, const torch::Tensor& y_pred) {
  TORCH_CHECK(y_true.dim() == 4 && y_true.sizes() == y_pred.sizes(),
              "jaccard_coef: expected y_true and y_pred of the same shape [N, C, H, W], got ",
              y_true.sizes(), " and ", y_pred.sizes());
  constexpr double kSmooth = 1e-12;
  const std::vector<int64_t> dims = {0, 2, 3};  // batch, H, W: one value per channel
  const torch::Tensor intersection = (y_true * y_pred).sum(dims);
  const torch::Tensor sum = (y_true + y_pred).sum(dims);
  return (intersection + kSmooth) / (sum - intersection + kSmooth);
}

torch::Tensor jaccard_coef_loss(const torch::Tensor& y_true, const torch::Tensor& y_pred) {
  return 1.0 - jaccard_coef(y_true, y_pred).mean();
}

SegMetrics segmentation_metrics(const torch::Tensor& y_true, const torch::Tensor& y_pred) {
  torch::NoGradGuard no_grad;
  const torch::Tensor predicted = y_pred.detach() > 0.5;
  const torch::Tensor hard = predicted.to(y_pred.scalar_type());
  const torch::Tensor soft_jac = jaccard_coef(y_true, y_pred.detach()).mean();
  const torch::Tensor hard_jac = jaccard_coef(y_true, hard).mean();
  // y_true is binary; comparing it thresholded too keeps 1.0 vs 0.9999999 from counting as wrong.
  const torch::Tensor accuracy = predicted.eq(y_true > 0.5).to(y_pred.scalar_type()).mean();
  // One stacked tensor and one copy: each .item() on a CUDA tensor is a separate synchronising
  // device-to-host transfer, and this runs every step.
  const torch::Tensor host =
      torch::stack({soft_jac, hard_jac, accuracy}).to(torch::kCPU, torch::kDouble);
  const auto values = host.accessor<double, 1>();
  return SegMetrics{values[0], values[1], values[2]};
}

}  // namespace gradwatch::train
