"""Gradient statistics for one step: the global L2 norm and one L2 norm per parameter tensor,
from one fused computation (torch._foreach_norm) and one device-to-host copy. Never a .item()
per parameter: on CUDA each would be a synchronising copy."""
import math
from typing import List, NamedTuple, Sequence

import torch


class GradStats(NamedTuple):
    global_norm: float        # sqrt(sum of squared layer norms); NaN/Inf propagate
    layer_norms: List[float]  # one per tensor, in the order given; 0 for a missing grad


def _host_values(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> List[float]:
    """Each tensor's L2 norm: one fused reduction, stacked, copied to the host once."""
    return torch.stack(torch._foreach_norm(list(tensors), 2)).to(dtype).cpu().tolist()


@torch.no_grad()
def grad_stats(params: Sequence[torch.Tensor]) -> GradStats:
    """`params` in a fixed order (the order of the hello's layer names)."""
    layer_norms = [0.0] * len(params)
    index = [i for i, p in enumerate(params) if p.grad is not None]
    if not index:
        return GradStats(0.0, layer_norms)
    values = _host_values([params[i].grad for i in index], torch.float32)
    for i, v in zip(index, values):
        layer_norms[i] = v
    return GradStats(math.sqrt(math.fsum(v * v for v in values)), layer_norms)


@torch.no_grad()
def grad_stats_per_item(params: Sequence[torch.Tensor]) -> GradStats:
    """The slow way, one .item() per parameter: only for tests and the benchmark that compare."""
    norms = [float(p.grad.norm().item()) if p.grad is not None else 0.0 for p in params]
    return GradStats(math.sqrt(math.fsum(v * v for v in norms)), norms)
