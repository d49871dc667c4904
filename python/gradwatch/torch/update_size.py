"""The size of the update an optimizer is about to apply, relative to the weights: ||dw|| / ||w||
over all parameters (global L2 norms), predicted before optimizer.step() from the gradients and
the optimizer's state, so that a monitor can veto an oversized update before it lands (the C++
session's update_size.h, for torch.optim as of PyTorch 1.13).

No copy of the weights is kept. The update direction is rebuilt as torch.optim.SGD and Adam build
it, in temporaries that live only during the call:
  SGD   d = g + wd*w; buf' = momentum*buf + (1 - dampening)*d (buf' = d on the first step);
        dw = -lr * (nesterov ? d + momentum*buf' : buf')     (momentum 0: dw = -lr * d)
  Adam  m' = b1*m + (1-b1)*g; v' = b2*v + (1-b2)*g^2 (g with wd*w added);
        dw = -lr/(1-b1^t) * m' / (sqrt(v')/sqrt(1-b2^t) + eps)   (amsgrad: max(v', vmax))
(`maximize` negates g.) Only norms are needed, so each direction is built up to a constant factor
that the host applies to its norm: a few fused multi-tensor ops (torch._foreach_*) over all of a
group's tensors, never a Python loop of tensor ops per parameter. Then one fused reduction over
the directions and the weights together and one device-to-host copy (step_stats.py folds both
into the gradient norms'). With native=True, CPU tensors skip the fused ops: each chunk's sum of
squares comes from one native call (native.py), the same arithmetic in one loop. Other optimizers
(AdamW included) are not measured: NaN.
"""
import math
import operator
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from gradwatch.torch import native as native_sums

NAN = float("nan")

# A run of Directions.tensors and the factor that turns their global norm into ||dw|| of their
# parameters: (number of tensors, factor, NaN); or, measured natively, (0, factor, the sum of
# squares whose square root the factor scales).
_Chunk = Tuple[int, float, float]


class UpdateSize(NamedTuple):
    ratio: float = NAN        # ||dw|| / ||w||; NaN when not measured or ||w|| = 0
    update_norm: float = NAN  # ||dw||, with each parameter group's learning rate
    weight_norm: float = NAN  # ||w||


class Directions(NamedTuple):
    """The update, ready for one fused norm: tensors in chunks, each chunk's ||dw|| its factor
    times the global norm of its tensors (or of a sum measured natively); weights, the
    parameters these move."""
    tensors: List[torch.Tensor]
    chunks: List[_Chunk]
    weights: List[torch.Tensor]
    native: bool  # try native sums first

    def add(self, factor: float, sumsq: Optional[float], tensors) -> None:
        """One chunk: its native sum of squares, else tensors() to take norms of."""
        if sumsq is not None:
            self.chunks.append((0, factor, sumsq))
        else:
            xs = list(tensors())
            self.tensors.extend(xs)
            self.chunks.append((len(xs), factor, NAN))


def _combine(base: List[torch.Tensor], *terms: Tuple[float, Optional[List[torch.Tensor]]]) -> List[torch.Tensor]:
    """base + sum(alpha * xs) in fused ops, in a new list; `base` itself when every alpha is 0."""
    out = base
    for alpha, xs in terms:
        if alpha == 0 or xs is None:
            continue
        if out is base:
            out = list(torch._foreach_add(base, xs, alpha=alpha))
        else:
            torch._foreach_add_(out, xs, alpha=alpha)
    return out


def _subsets(keys: List[object]) -> List[Tuple[object, Optional[List[int]]]]:
    """(key, indices with that key) in order of first appearance; indices None when every key is
    the same (the usual case: one subset, no copying)."""
    if keys.count(keys[0]) == len(keys):
        return [(keys[0], None)]
    groups: Dict[object, List[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [(keys[ix[0]], ix) for ix in sorted(groups.values(), key=lambda ix: ix[0])]


def _take(xs: List, index: Optional[List[int]]) -> List:
    return xs if index is None else [xs[i] for i in index]


def _sgd(optimizer: torch.optim.Optimizer, group: dict, params: List[torch.Tensor], out: Directions) -> None:
    # With s = -1 for maximize: d = s*(g + s*wd*w), and dw/-lr = c*d + a*buf (a = 0 without a
    # buffer), so ||dw|| = lr*|c| * ||g + s*wd*w + (s*a/c)*buf||: one or two fused adds.
    s = -1.0 if group.get("maximize", False) else 1.0
    wd, m = group.get("weight_decay", 0), group.get("momentum", 0)
    dampening, nesterov = group.get("dampening", 0), group.get("nesterov", False)
    bufs = [(optimizer.state.get(p) or {}).get("momentum_buffer") if m != 0 else None for p in params]
    for has_buf, index in _subsets([b is not None for b in bufs]):  # with a buffer, without
        ps = _take(params, index)
        if has_buf:
            b = _take(bufs, index)
            c, a = (1 + m * (1 - dampening), m * m) if nesterov else (1 - dampening, m)
        else:  # the first step: buf' = d
            b, c, a = None, (1 + m if nesterov else 1.0), 0.0
        if c == 0:  # full dampening: dw = -lr*m*buf
            (x, cw, y, cb), factor = (b, 0.0, None, 0.0), abs(a)
        else:
            (x, cw, y, cb), factor = ([p.grad for p in ps], s * wd, b, s * a / c if b is not None else 0.0), abs(c)
        sumsq = native_sums.sgd_sumsq(x, ps if cw else None, y, cw, cb) if out.native else None
        out.add(group["lr"] * factor, sumsq, lambda: _combine(x, (cw, ps), (cb, y)))


def _adam(optimizer: torch.optim.Optimizer, group: dict, params: List[torch.Tensor], out: Directions) -> None:
    # Per step count t (each tensor may have its own), with u = g + s*wd*w, m' = sm*M, v' = sv*V:
    #   ||dw|| = lr*sm/(bc1*k) * ||M / (sqrt(V) + eps/k)||,  k = sqrt(sv/bc2).
    s = -1.0 if group.get("maximize", False) else 1.0
    (b1, b2), eps, wd = group["betas"], group["eps"], group.get("weight_decay", 0)
    states = [optimizer.state.get(p) or {} for p in params]
    counts = iter(_step_counts([st["step"] for st in states if "exp_avg" in st]))
    # The step this update makes: t = the state's count + 1; 0 = no state yet (then t = 1).
    for t, index in _subsets([next(counts) + 1 if "exp_avg" in st else 0.0 for st in states]):
        ps, sts = _take(params, index), _take(states, index)
        grads, cw = [p.grad for p in ps], s * wd
        # m = 0 (or b1 = 0): m' = s*(1-b1)*u; v = 0 (or b2 = 0): v' = (1-b2)*u^2.
        m, cm, sm = ([st["exp_avg"] for st in sts], s * (1 - b1) / b1, b1) if t and b1 != 0 else (None, 0.0, 1 - b1)
        v, cv, sv = ([st["exp_avg_sq"] for st in sts], (1 - b2) / b2, b2) if t and b2 != 0 else (None, 0.0, 1 - b2)
        vmax = [st.get("max_exp_avg_sq") for st in sts] if t and group.get("amsgrad", False) else []
        vmax = vmax if vmax and all(x is not None for x in vmax) else None
        t = t or 1.0
        k = math.sqrt(sv / (1 - b2 ** t))
        sumsq = native_sums.adam_sumsq(grads, ps if cw else None, m, v, vmax, cw, cm, cv, 1 / sv, eps / k) \
            if out.native else None
        out.add(group["lr"] * sm / ((1 - b1 ** t) * k), sumsq,
                lambda: _adam_directions(grads, ps, cw, m, cm, v, cv, vmax, 1 / sv, eps / k))


def _adam_directions(grads, ps, cw, m, cm, v, cv, vmax, kmax, eps) -> List[torch.Tensor]:
    """M / (sqrt(V) + eps) per tensor in fused ops, with u, M and V as native.adam_sumsq has them."""
    u = _combine(grads, (cw, ps))
    m_hat = u if m is None else torch._foreach_add(m, u, alpha=cm)
    v_hat = torch._foreach_mul(u, u) if v is None else torch._foreach_addcmul(v, u, u, value=cv)
    if vmax is not None:
        torch._foreach_maximum_(v_hat, torch._foreach_mul(vmax, kmax))
    torch._foreach_sqrt_(v_hat)
    torch._foreach_add_(v_hat, eps)
    return torch._foreach_div(m_hat, v_hat)


def _step_counts(steps: List[object]) -> List[float]:
    """Adam's state["step"] values: CPU tensors, read without a device copy; with capturable=True
    they live on the device, and are read in one copy for all."""
    if all(not isinstance(x, torch.Tensor) or x.device.type == "cpu" for x in steps):
        return [float(x) for x in steps]
    return torch.stack([x.reshape(()).double() for x in steps]).tolist()


def directions(optimizer: torch.optim.Optimizer, native: bool = False) -> Optional[Directions]:
    """The update `optimizer.step()` would apply now, with the gradients as they are (before any
    clipping) and each parameter group's current learning rate, as tensors to take norms of (or,
    with native, sums already taken where the tensors allow); None for an optimizer that is not
    measured or no parameter with a gradient. Call under torch.no_grad()."""
    if type(optimizer) is torch.optim.SGD:
        direction = _sgd
    elif type(optimizer) is torch.optim.Adam:
        direction = _adam
    else:
        return None
    out = Directions([], [], [], native)
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            direction(optimizer, group, params, out)
            out.weights.extend(params)
    return out if out.chunks else None


def update_size(d: Directions, norms: Sequence[float], weight_sumsq: Optional[float] = None) -> UpdateSize:
    """From the norms of d.tensors, then of d.weights, in order, on the host; with weight_sumsq
    (the weights' sum of squares, measured natively) `norms` are d.tensors' alone."""
    update_sq, start = [], 0
    for count, factor, sumsq in d.chunks:
        if count == 0:
            update_sq.append(factor * factor * sumsq)
            continue
        xs = norms[start:start + count]
        update_sq.append(factor * factor * math.fsum(map(operator.mul, xs, xs)))
        start += count
    if weight_sumsq is None:
        xs = norms[start:]
        weight_sumsq = math.fsum(map(operator.mul, xs, xs))
    update, weight = math.sqrt(math.fsum(update_sq)), math.sqrt(weight_sumsq)
    return UpdateSize(update / weight if weight > 0 else NAN, update, weight)


def predict_update(optimizer: torch.optim.Optimizer, native: Optional[bool] = None) -> UpdateSize:
    """directions(optimizer), measured as step_stats measures it (one fused reduction and one
    device-to-host copy, or native sums; native None = where the library is available)."""
    from gradwatch.torch.step_stats import step_stats  # step_stats builds on this module
    return step_stats([p for group in optimizer.param_groups for p in group["params"]], optimizer, native)[1]
