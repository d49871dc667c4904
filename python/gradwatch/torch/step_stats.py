"""Everything the session measures in a step, in one device-to-host copy: the gradient norms
(grad_stats.py) and the predicted update size (update_size.py) from one fused torch._foreach_norm
over the gradients, the update directions and the weights together, read to the host at once
(host_floats: on a device one stack and one copy)."""
from typing import Optional, Sequence, Tuple

import torch

from gradwatch.torch.grad_stats import GradStats, host_floats, layer_stats
from gradwatch.torch.update_size import UpdateSize, directions, update_size


@torch.no_grad()
def step_stats(params: Sequence[torch.Tensor],
               optimizer: Optional[torch.optim.Optimizer]) -> Tuple[GradStats, UpdateSize]:
    """grad_stats(params) and, unless optimizer is None, predict_update(optimizer), with the same
    values: `params` in the hello's layer order."""
    grads = [p.grad for p in params]
    present = [g for g in grads if g is not None]
    d = directions(optimizer) if optimizer is not None and present else None
    tensors = present if d is None else present + d.tensors + d.weights
    if not tensors:
        return GradStats(0.0, [0.0] * len(params)), UpdateSize()
    values = host_floats(torch._foreach_norm(tensors, 2))
    n = len(present)
    return layer_stats(grads, values[:n]), (UpdateSize() if d is None else update_size(d, values[n:]))
