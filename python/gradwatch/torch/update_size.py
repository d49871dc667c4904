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
into the gradient norms'). Natively (native.py), CPU tensors skip the fused ops: SGD's terms go to
one pass over every parameter's gradient, weight and buffer (sgd_native_stats), Adam's chunks
each to one call. Other optimizers (AdamW included) are not measured: NaN.
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
    parameters these move (measured with torch ops only: with native sums, step_stats measures
    all the optimizer's parameters natively and this stays empty)."""
    tensors: List[torch.Tensor]
    chunks: List[_Chunk]
    weights: List[torch.Tensor]
    native: bool  # try native sums first

    def add(self, factor: float, tensors: List[torch.Tensor], weights: List[torch.Tensor]) -> None:
        """One chunk measured with torch ops: `tensors` to take norms of, moving `weights`."""
        self.tensors.extend(tensors)
        self.chunks.append((len(tensors), factor, NAN))
        if not self.native:
            self.weights.extend(weights)

    def add_sumsq(self, factor: float, sumsq: float) -> None:
        """One chunk measured natively: its sum of squares."""
        self.chunks.append((0, factor, sumsq))


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


class _SgdTerms(NamedTuple):
    """A group's SGD update as ||dw|| = factor * ||cg*g + cw*w + cb*buf|| over its parameters with
    a momentum buffer, and first * ||g + cw0*w|| over those without (the first step: buf' = d)."""
    with_buffer: Tuple[float, float, float]  # cg, cw, cb
    factor: float
    cw0: float
    first: float


def _sgd_terms(group: dict) -> _SgdTerms:
    # With s = -1 for maximize: d = s*(g + s*wd*w), and dw/-lr = c*d + a*buf (a = 0 without a
    # buffer), so ||dw|| = lr*|c| * ||g + s*wd*w + (s*a/c)*buf||: one or two fused adds; c = 0 is
    # full dampening, dw = -lr*a*buf.
    s = -1.0 if group.get("maximize", False) else 1.0
    wd, m = group.get("weight_decay", 0), group.get("momentum", 0)
    dampening, nesterov, lr = group.get("dampening", 0), group.get("nesterov", False), group["lr"]
    if m == 0:  # no momentum: dw = -lr*d, whatever buffers the state may still hold
        return _SgdTerms((1.0, s * wd, 0.0), lr, s * wd, lr)
    c, a = (1 + m * (1 - dampening), m * m) if nesterov else (1 - dampening, m)
    (cg, cw, cb), factor = ((0.0, 0.0, 1.0), abs(a)) if c == 0 else ((1.0, s * wd, s * a / c), abs(c))
    return _SgdTerms((cg, cw, cb), lr * factor, s * wd, lr * (1 + m if nesterov else 1.0))


def _sgd(optimizer: torch.optim.Optimizer, group: dict, out: Directions) -> None:
    terms = _sgd_terms(group)  # without momentum cb = 0: a buffer left in the state adds nothing
    params = [p for p in group["params"] if p.grad is not None]
    state = optimizer.state
    bufs = [(state.get(p) or {}).get("momentum_buffer") for p in params]
    (cg, cw, cb) = terms.with_buffer
    for has_buf, subset in _subsets([b is not None for b in bufs]) if params else ():  # with a buffer, without
        ps = _take(params, subset)
        grads = [p.grad for p in ps]
        if has_buf:
            b = _take(bufs, subset)
            out.add(terms.factor, b if cg == 0 else _combine(grads, (cw, ps), (cb, b)), ps)
        else:
            out.add(terms.first, _combine(grads, (terms.cw0, ps)), ps)


def sgd_native_stats(params: Sequence[torch.Tensor], optimizer: torch.optim.SGD
                     ) -> Optional[Tuple[List[float], Directions]]:
    """For step_stats, in one native pass over each parameter's gradient, weight and momentum
    buffer (native.sgd_step_stats): native.grad_stats' values for `params` and the optimizer's
    weights, and the update's Directions (native chunks only); None when the tensors cannot be
    read natively."""
    moved: List[torch.Tensor] = []
    sizes, coefficients, terms = [], [], []
    for group in optimizer.param_groups:
        t = _sgd_terms(group)
        moved.extend(group["params"])
        sizes.append(len(group["params"]))
        coefficients.extend(t.with_buffer + (t.cw0,))
        terms.append(t)
    state = optimizer.state
    values = native_sums.sgd_step_stats(params, moved, sizes, coefficients, list(state),
                                        [s.get("momentum_buffer") for s in state.values()])
    if values is None:
        return None
    n = len(params) + 2
    d = Directions([], [], [], True)
    for k, t in enumerate(terms):
        d.add_sumsq(t.factor, values[n + 2 * k])
        d.add_sumsq(t.first, values[n + 1 + 2 * k])
    return values[:n], d


def _adam(optimizer: torch.optim.Optimizer, group: dict, out: Directions) -> None:
    # Per step count t (each tensor may have its own), with u = g + s*wd*w, m' = sm*M, v' = sv*V:
    #   ||dw|| = lr*sm/(bc1*k) * ||M / (sqrt(V) + eps/k)||,  k = sqrt(sv/bc2).
    s = -1.0 if group.get("maximize", False) else 1.0
    (b1, b2), eps, wd = group["betas"], group["eps"], group.get("weight_decay", 0)
    params = [p for p in group["params"] if p.grad is not None]
    states = [optimizer.state.get(p) or {} for p in params]
    counts = iter(_step_counts([st["step"] for st in states if "exp_avg" in st]))
    # The step this update makes: t = the state's count + 1; 0 = no state yet (then t = 1).
    for t, index in _subsets([next(counts) + 1 if "exp_avg" in st else 0.0 for st in states]) if params else ():
        ps, sts = _take(params, index), _take(states, index)
        cw = s * wd
        # m = 0 (or b1 = 0): m' = s*(1-b1)*u; v = 0 (or b2 = 0): v' = (1-b2)*u^2.
        m, cm, sm = ([st["exp_avg"] for st in sts], s * (1 - b1) / b1, b1) if t and b1 != 0 else (None, 0.0, 1 - b1)
        v, cv, sv = ([st["exp_avg_sq"] for st in sts], (1 - b2) / b2, b2) if t and b2 != 0 else (None, 0.0, 1 - b2)
        vmax = [st.get("max_exp_avg_sq") for st in sts] if t and group.get("amsgrad", False) else []
        vmax = vmax if vmax and all(x is not None for x in vmax) else None
        t = t or 1.0
        k = math.sqrt(sv / (1 - b2 ** t))
        factor = group["lr"] * sm / ((1 - b1 ** t) * k)
        sumsq = native_sums.adam_sumsq(ps, m, v, vmax, cw, cm, cv, 1 / sv, eps / k) if out.native else None
        if sumsq is not None:
            out.add_sumsq(factor, sumsq)
        else:
            out.add(factor, _adam_directions([p.grad for p in ps], ps, cw, m, cm, v, cv, vmax, 1 / sv, eps / k), ps)


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
    measured. Call under torch.no_grad()."""
    if type(optimizer) is torch.optim.SGD:
        direction = _sgd
    elif type(optimizer) is torch.optim.Adam:
        direction = _adam
    else:
        return None
    out = Directions([], [], [], native)
    for group in optimizer.param_groups:
        direction(optimizer, group, out)
    return out


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
