// The size of the update an optimizer is about to apply, relative to the weights: ||dw|| / ||w||
// over all parameters (global L2 norms), predicted before optimizer.step() from the gradients
// and the optimizer's state, so that a monitor can veto an oversized update before it lands.
//
// No copy of the weights is kept. The update direction is rebuilt exactly as LibTorch 1.13's
// optimizers build it, in temporaries that live only during the call:
//   SGD   d = g + wd*w; buf' = momentum*buf + (1 - dampening)*d (buf' = d on the first step);
//         dw = -lr * (nesterov ? d + momentum*buf' : buf')    (momentum 0: dw = -lr * d)
//         one temporary per parameter with momentum (the new buffer), none without.
//   Adam  m' = b1*m + (1-b1)*g; v' = b2*v + (1-b2)*g^2 (g with wd*w added);
//         dw = -lr/(1-b1^t) * m' / (sqrt(v')/sqrt(1-b2^t) + eps)   (amsgrad: max(v', vmax))
//         three temporaries per parameter.
// Then one fused reduction (at::_foreach_norm over the directions and the weights together) and
// one device-to-host copy. Other optimizers: not measured (NaN).
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <vector>

namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace gradwatch::torchmon {

struct UpdateSize {
  double ratio = NAN;        // ||dw|| / ||w||; NaN when not measured or ||w|| = 0
  double update_norm = NAN;  // ||dw||, with each parameter group's learning rate
  double weight_norm = NAN;  // ||w||
};

// The update `optimizer.step()` would apply now, with the gradients as they are (before any
// clipping) and each parameter group's current learning rate.
UpdateSize PredictUpdate(torch::optim::Optimizer& optimizer);

}  // namespace gradwatch::torchmon
