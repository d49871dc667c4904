"""Everything the session measures in a step, in one device-to-host copy: the gradient norms
(grad_stats.py) and the predicted update size (update_size.py) from one fused torch._foreach_norm
over the gradients, the update directions and the weights together, read to the host at once
(host_floats: on a device one stack and one copy). On the CPU, where the native library is
available (native.py), sums of squares taken in one native call each replace the fused ops."""
import math
from typing import Optional, Sequence, Tuple

import torch

from gradwatch.torch import native as native_sums
from gradwatch.torch.grad_stats import GradStats, host_floats, layer_stats
from gradwatch.torch.update_size import UpdateSize, directions, update_size


@torch.no_grad()
def step_stats(params: Sequence[torch.Tensor], optimizer: Optional[torch.optim.Optimizer],
               native: Optional[bool] = None) -> Tuple[GradStats, UpdateSize]:
    """grad_stats(params) and, unless optimizer is None, predict_update(optimizer), with the same
    values: `params` in the hello's layer order. native: use native sums where the tensors allow
    (None = where the library is available); False = torch ops only."""
    grads = [p.grad for p in params]
    present = [g for g in grads if g is not None]
    native = native_sums.available() if native is None else native
    d = directions(optimizer, native) if optimizer is not None and present else None
    n = len(present)
    sums = native_sums.sumsq(present + ([] if d is None else d.weights)) if native and present else None
    if sums is not None:
        update = UpdateSize()
        if d is not None:
            rest = host_floats(torch._foreach_norm(d.tensors, 2)) if d.tensors else []
            update = update_size(d, rest, math.fsum(sums[n:]))
        return layer_stats(grads, [math.sqrt(x) for x in sums[:n]]), update
    tensors = present if d is None else present + d.tensors + d.weights
    if not tensors:
        return GradStats(0.0, [0.0] * len(params)), UpdateSize()
    values = host_floats(torch._foreach_norm(tensors, 2))
    return layer_stats(grads, values[:n]), (UpdateSize() if d is None else update_size(d, values[n:]))
