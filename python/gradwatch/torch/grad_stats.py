"""Gradient statistics for one step: the global L2 norm and one L2 norm per parameter tensor,
from one fused computation (torch._foreach_norm) read to the host at once (host_floats). Never a
.item() per parameter on a device: on CUDA each would be a synchronising copy."""
import array
import math
import operator
from typing import List, NamedTuple, Optional, Sequence

import torch


class GradStats(NamedTuple):
    global_norm: float        # sqrt(sum of squared layer norms); NaN/Inf propagate
    layer_norms: List[float]  # one per tensor, in the order given; 0 for a missing grad


def host_floats(values: Sequence[torch.Tensor]) -> List[float]:
    """0-dim tensors as Python floats: on a device one stack and one device-to-host copy for all;
    on the CPU one .item() each (half the time of a stack and a copy for a few dozen)."""
    if values and values[0].device.type == "cpu":
        return [v.item() for v in values]
    return torch.stack(list(values)).to("cpu", torch.float64).tolist()


def layer_stats(norms: Sequence[float], missing: Sequence[bool] = ()) -> GradStats:
    """GradStats from the norms of the gradients present, in order, each rounded to float32 (as
    reported); `missing` marks, one per layer, those without a gradient (0 in the report), () when
    none is."""
    present = array.array("f", norms).tolist()
    layer_norms = present
    if missing:
        found = iter(present)
        layer_norms = [0.0 if m else next(found) for m in missing]
    return GradStats(math.sqrt(math.fsum(map(operator.mul, present, present))), layer_norms)


def grad_stats(params: Sequence[torch.Tensor], native: Optional[bool] = None) -> GradStats:
    """`params` in a fixed order (the order of the hello's layer names). native: as step_stats."""
    from gradwatch.torch.step_stats import step_stats  # step_stats builds on this module
    return step_stats(params, None, native)[0]


@torch.no_grad()
def grad_stats_per_item(params: Sequence[torch.Tensor]) -> GradStats:
    """The slow way, one .item() per parameter: only for tests and the benchmark that compare."""
    norms = [float(p.grad.norm().item()) if p.grad is not None else 0.0 for p in params]
    return GradStats(math.sqrt(math.fsum(v * v for v in norms)), norms)
