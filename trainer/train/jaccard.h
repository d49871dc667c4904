// The Jaccard (IoU) loss of the case and the segmentation metrics the trainer reports each step.
//
// jaccard_coef_loss is the user's Keras loss, term for term: with smooth = 1e-12 and sums over the
// batch, H and W for each channel,
//   jac  = (sum(y_true * y_pred) + smooth) / (sum(y_true + y_pred) - sum(y_true * y_pred) + smooth)
//   loss = 1 - mean over channels(jac)
// The tiny smooth is what lets the case collapse: once the sigmoid saturates at 0 the loss sits at
// exactly 1.0 and its gradient is ~0.
#pragma once

#include <torch/types.h>

namespace gradwatch::train {

// Per-channel Jaccard coefficient, shape [C], of y_true and y_pred, both [N, C, H, W] and of the
// same shape; differentiable in y_pred. Throws c10::Error on mismatched or non-4-D shapes.
torch::Tensor jaccard_coef(const torch::Tensor& y_true, const torch::Tensor& y_pred);

// 1 - mean(jaccard_coef(y_true, y_pred)): a 0-d tensor in [0, 1], differentiable in y_pred.
torch::Tensor jaccard_coef_loss(const torch::Tensor& y_true, const torch::Tensor& y_pred);

struct SegMetrics {
  double jaccard_soft;  // mean jaccard_coef on the probabilities: 1 - the loss
  double jaccard_hard;  // the same with y_pred thresholded (> 0.5 -> 1, else 0)
  double accuracy;      // share of pixels where (y_pred > 0.5) equals the (binary) y_true
};

// The three metrics of a batch, computed without autograd. Shapes as jaccard_coef. Costs one
// device-to-host copy, whatever the device.
SegMetrics segmentation_metrics(const torch::Tensor& y_true, const torch::Tensor& y_pred);

}  // namespace gradwatch::train
