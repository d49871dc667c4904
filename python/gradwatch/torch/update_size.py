"""The size of the update an optimizer is about to apply, relative to the weights: ||dw|| / ||w||
over all parameters (global L2 norms), predicted before optimizer.step() from the gradients and
the optimizer's state, so that a monitor can veto an oversized update before it lands (the C++
session's update_size.h, for torch.optim as of PyTorch 1.13).

No copy of the weights is kept. The update direction is rebuilt as torch.optim.SGD and Adam build
it, with fused foreach ops, in temporaries that live only during the call:
  SGD   d = g + wd*w; buf' = momentum*buf + (1 - dampening)*d (buf' = d on the first step);
        dw = -lr * (nesterov ? d + momentum*buf' : buf')     (momentum 0: dw = -lr * d)
  Adam  m' = b1*m + (1-b1)*g; v' = b2*v + (1-b2)*g^2 (g with wd*w added);
        dw = -lr/(1-b1^t) * m' / (sqrt(v')/sqrt(1-b2^t) + eps)   (amsgrad: max(v', vmax))
(`maximize` negates g.) Then one fused reduction over the directions and the weights together and
one device-to-host copy. Other optimizers (AdamW included) are not measured: NaN.
"""
import math
from typing import List, NamedTuple

import torch

from gradwatch.torch.grad_stats import _host_values

NAN = float("nan")


class UpdateSize(NamedTuple):
    ratio: float = NAN        # ||dw|| / ||w||; NaN when not measured or ||w|| = 0
    update_norm: float = NAN  # ||dw||, with each parameter group's learning rate
    weight_norm: float = NAN  # ||w||


def _grads(group: dict, params: List[torch.Tensor]) -> List[torch.Tensor]:
    grads = [p.grad for p in params]
    if group.get("maximize", False):
        grads = torch._foreach_neg(grads)
    if group.get("weight_decay", 0) != 0:
        grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
    return grads


def _sgd(optimizer: torch.optim.Optimizer, group: dict, params: List[torch.Tensor]) -> List[torch.Tensor]:
    d = _grads(group, params)
    momentum = group.get("momentum", 0)
    if momentum == 0:
        return d
    state = optimizer.state
    bufs = [state[p].get("momentum_buffer") if p in state else None for p in params]
    nesterov, dampening = group.get("nesterov", False), group.get("dampening", 0)
    if all(b is not None for b in bufs):  # every step but the first: two fused ops
        if nesterov:  # d + momentum*(momentum*buf + (1 - dampening)*d), expanded
            out = torch._foreach_mul(bufs, momentum * momentum)
            torch._foreach_add_(out, d, alpha=1 + momentum * (1 - dampening))
        else:
            out = torch._foreach_mul(bufs, momentum)
            torch._foreach_add_(out, d, alpha=1 - dampening)
        return out
    have = [i for i, b in enumerate(bufs) if b is not None]
    new_bufs = list(d)  # the first step: buf' = d
    if have:
        moved = torch._foreach_add(torch._foreach_mul([bufs[i] for i in have], momentum), [d[i] for i in have],
                                   alpha=1 - dampening)
        for i, b in zip(have, moved):
            new_bufs[i] = b
    return torch._foreach_add(d, new_bufs, alpha=momentum) if nesterov else new_bufs


def _adam(optimizer: torch.optim.Optimizer, group: dict, params: List[torch.Tensor]) -> List[torch.Tensor]:
    g = _grads(group, params)
    b1, b2 = group["betas"]
    out = []
    for p, gi in zip(params, g):  # per tensor: each may have its own step count
        state = optimizer.state.get(p, {})
        if "exp_avg" in state:
            step = float(state["step"]) + 1
            m = state["exp_avg"].mul(b1).add_(gi, alpha=1 - b1)
            v = state["exp_avg_sq"].mul(b2).addcmul_(gi, gi, value=1 - b2)
            if group.get("amsgrad", False) and state.get("max_exp_avg_sq") is not None:
                v = torch.maximum(v, state["max_exp_avg_sq"])
        else:
            step, m, v = 1.0, gi.mul(1 - b1), gi.mul(gi).mul_(1 - b2)
        denom = v.sqrt_().div_(math.sqrt(1 - b2 ** step)).add_(group["eps"])
        out.append(m.div_(denom).mul_(1 / (1 - b1 ** step)))  # the bias correction of lr
    return out


@torch.no_grad()
def predict_update(optimizer: torch.optim.Optimizer) -> UpdateSize:
    """The update `optimizer.step()` would apply now, with the gradients as they are (before any
    clipping) and each parameter group's current learning rate."""
    if type(optimizer) is torch.optim.SGD:
        direction = _sgd
    elif type(optimizer) is torch.optim.Adam:
        direction = _adam
    else:
        return UpdateSize()
    dirs: List[torch.Tensor] = []
    weights: List[torch.Tensor] = []
    lrs: List[float] = []
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        dirs += direction(optimizer, group, params)
        weights += params
        lrs += [float(group["lr"])] * len(params)
    if not dirs:
        return UpdateSize()
    norms = _host_values(dirs + weights, torch.float64)
    n = len(dirs)
    update = math.sqrt(math.fsum((lr * x) ** 2 for lr, x in zip(lrs, norms[:n])))
    weight = math.sqrt(math.fsum(x * x for x in norms[n:]))
    return UpdateSize(update / weight if weight > 0 else NAN, update, weight)
