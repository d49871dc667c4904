"""Everything the session measures in a step, in one device-to-host copy: the gradient norms
(grad_stats.py) and the predicted update size (update_size.py) from one fused torch._foreach_norm
over the gradients, the update directions and the weights together, read to the host at once
(host_floats: on a device one stack and one copy). On the CPU, where the native library is
available (native.py), the same sums come from one native call per list of parameters instead."""
from typing import Optional, Sequence, Tuple

import torch

from gradwatch.torch import native as native_sums
from gradwatch.torch.grad_stats import GradStats, host_floats, layer_stats
from gradwatch.torch.update_size import UpdateSize, directions, sgd_native_stats, update_size


@torch.no_grad()
def step_stats(params: Sequence[torch.Tensor], optimizer: Optional[torch.optim.Optimizer],
               native: Optional[bool] = None) -> Tuple[GradStats, UpdateSize]:
    """grad_stats(params) and, unless optimizer is None, predict_update(optimizer), with the same
    values: `params` in the hello's layer order. native: use native sums where the tensors allow
    (None = once the library is loaded: native.ready(); True = waiting for it to load first);
    False = torch ops only."""
    if native_sums.ready() if native is None else native:
        measured = _native_step_stats(params, optimizer)
        if measured is not None:
            return measured
    grads = [p.grad for p in params]
    present = [g for g in grads if g is not None]
    d = directions(optimizer) if optimizer is not None and present else None
    tensors = present if d is None else present + d.tensors + d.weights
    if not tensors:
        return _unmeasured(len(params))
    values = host_floats(torch._foreach_norm(tensors, 2))
    n = len(present)
    stats = layer_stats(values[:n], [g is None for g in grads] if n < len(grads) else ())
    return stats, (UpdateSize() if d is None else update_size(d, values[n:]))


def _unmeasured(layers: int) -> Tuple[GradStats, UpdateSize]:
    """No gradient at all: norms of 0, nothing moves."""
    return GradStats(0.0, [0.0] * layers), UpdateSize()


def _native_step_stats(params: Sequence[torch.Tensor], optimizer: Optional[torch.optim.Optimizer]):
    """step_stats from native sums: for SGD one pass over the gradients, weights and momentum
    buffers; otherwise one call for the gradients and the weights (every parameter the optimizer
    holds; those without a gradient do not count) and one per parameter group for the directions
    (torch ops for a group it cannot read). None when the gradients or the weights cannot be read
    natively."""
    d = None
    if type(optimizer) is torch.optim.SGD:
        measured = sgd_native_stats(params, optimizer)
        if measured is None:
            return None
        values, d = measured
    else:
        weights = [p for group in optimizer.param_groups for p in group["params"]] if optimizer is not None else []
        values = native_sums.grad_stats(params, weights)
        if values is None:
            return None
    n = len(params)
    norms, global_norm, weight_sumsq = values[:n], values[n], values[n + 1]
    if -1.0 in norms:  # layers without a gradient: 0 in the report
        if norms.count(-1.0) == n:
            return _unmeasured(n)
        norms = [0.0 if x == -1.0 else x for x in norms]
    stats = GradStats(global_norm, norms)
    if d is None and optimizer is not None:
        d = directions(optimizer, native=True)
    if d is None:
        return stats, UpdateSize()
    rest = host_floats(torch._foreach_norm(d.tensors, 2)) if d.tensors else []
    return stats, update_size(d, rest, weight_sumsq)
