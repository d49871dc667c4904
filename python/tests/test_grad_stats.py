"""Gradient norms from one fused computation, and the update size predicted before the step."""
import array
import copy
import itertools
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

import torch

from fakes import TinyNet, backward
from gradwatch.torch import grad_stats, predict_update
from gradwatch.torch.grad_stats import grad_stats_per_item, host_floats
import gradwatch.torch.step_stats as step_stats_module
from gradwatch.torch import native
from gradwatch.torch.step_stats import step_stats


@torch.no_grad()
def per_tensor_update(opt: torch.optim.Optimizer) -> float:
    """||dw|| / ||w|| the slow way, one tensor at a time as torch.optim's _single_tensor_sgd and
    _single_tensor_adam compute it (the per-tensor loop predict_update replaced)."""
    dw, w = [], []
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            g = -p.grad if group.get("maximize", False) else p.grad
            if group["weight_decay"] != 0:
                g = g.add(p, alpha=group["weight_decay"])
            state = opt.state.get(p) or {}
            if isinstance(opt, torch.optim.SGD):
                d, m = g, group["momentum"]
                if m != 0:
                    buf = state.get("momentum_buffer")
                    buf = g.clone() if buf is None else buf.mul(m).add_(g, alpha=1 - group["dampening"])
                    d = g.add(buf, alpha=m) if group["nesterov"] else buf
                dw.append(group["lr"] * float(d.double().norm()))
            else:
                b1, b2 = group["betas"]
                step = float(state["step"]) + 1 if "exp_avg" in state else 1.0
                m = state["exp_avg"].mul(b1).add_(g, alpha=1 - b1) if "exp_avg" in state else g.mul(1 - b1)
                v = state["exp_avg_sq"].mul(b2).addcmul_(g, g, value=1 - b2) if "exp_avg" in state \
                    else g.mul(g).mul_(1 - b2)
                if group["amsgrad"] and state.get("max_exp_avg_sq") is not None:
                    v = torch.maximum(v, state["max_exp_avg_sq"])
                denom = v.sqrt().div_(math.sqrt(1 - b2 ** step)).add_(group["eps"])
                dw.append(group["lr"] / (1 - b1 ** step) * float(m.div(denom).double().norm()))
            w.append(float(p.double().norm()))
    return math.sqrt(math.fsum(x * x for x in dw)) / math.sqrt(math.fsum(x * x for x in w))


def warmed(make_optimizer, model_seed: int, warm_steps: int, grad_seed: int):
    """A TinyNet (seeded with model_seed) and make_optimizer(model) after warm_steps updates, which
    built its state (momentum, Adam moments) up; the gradient of grad_seed is in hand."""
    torch.manual_seed(model_seed)
    model = TinyNet()
    opt = make_optimizer(model)
    for s in range(warm_steps):
        opt.zero_grad()
        backward(model, seed=s)
        opt.step()
    opt.zero_grad()
    backward(model, seed=grad_seed)
    return model, opt


MODES = (False, True)  # torch ops only; native sums (native.py)


class TinyModelTest(unittest.TestCase):
    """A TinyNet seeded with `seed`, and its parameters in order."""
    seed = 3

    def setUp(self) -> None:
        torch.manual_seed(self.seed)
        self.model = TinyNet()
        self.params = list(self.model.parameters())


class GradStatsTest(TinyModelTest):

    def test_fused_norms_equal_one_norm_per_parameter(self):
        backward(self.model)
        slow = grad_stats_per_item(self.params)
        flat = torch.cat([p.grad.flatten() for p in self.params if p.grad is not None]).double()
        for mode in MODES:
            with self.subTest(native=mode):
                fused = grad_stats(self.params, native=mode)
                self.assertEqual(len(fused.layer_norms), len(self.params))
                for a, b in zip(fused.layer_norms, slow.layer_norms):
                    self.assertAlmostEqual(a, b, places=6)
                self.assertAlmostEqual(fused.global_norm, float(flat.norm()), places=5)

    def test_a_parameter_without_gradient_reports_zero(self):
        backward(self.model)
        stats = grad_stats(self.params)
        self.assertEqual(stats.layer_norms[-2:], [0.0, 0.0])  # unused.weight, unused.bias
        self.assertGreater(stats.layer_norms[0], 0)

    def test_no_gradients_at_all_is_zero_not_an_error(self):
        self.assertEqual(grad_stats(self.params), (0.0, [0.0] * len(self.params)))

    def test_non_finite_gradients_propagate(self):
        backward(self.model)
        self.params[0].grad[0, 0] = math.nan
        self.params[2].grad[0, 0] = math.inf
        for mode in MODES:
            with self.subTest(native=mode):
                stats = grad_stats(self.params, native=mode)
                self.assertTrue(math.isnan(stats.layer_norms[0]))
                self.assertTrue(math.isinf(stats.layer_norms[2]))
                self.assertTrue(math.isnan(stats.global_norm))


def reported(sums):
    """Layers' gradient norms as reported, from their sums of squares (-1: no gradient), then the
    global norm from those: what the native operators answer first."""
    norms = [array.array("f", [math.sqrt(x)])[0] if x != -1.0 else -1.0 for x in sums]
    return norms + [math.sqrt(sum(x * x for x in norms if x != -1.0))]


class NativeSumsTest(unittest.TestCase):
    """native.py: the library builds here, and answers only for tensors it can read."""

    def test_the_library_is_built_and_loaded(self):
        self.assertTrue(native.available())

    @staticmethod
    def param(*shape, dtype=torch.float32, grad=True):
        p = torch.nn.Parameter(torch.randn(*shape, dtype=dtype))
        if grad:
            p.grad = torch.randn(*shape, dtype=dtype)
        return p

    def test_gradient_and_weight_sums_equal_torch_in_both_dtypes(self):
        # float32 is summed in float within blocks (relative error ~1e-7); values whose squares
        # overflow or underflow in float are summed in double, as float64 always is.
        for dtype, rel in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
            ps = [self.param(7, 3, dtype=dtype), self.param(1, dtype=dtype), self.param(0, dtype=dtype),
                  self.param(2, dtype=dtype, grad=False), self.param(1000, dtype=dtype), self.param(300, dtype=dtype)]
            ps[1].grad.fill_(1e20)     # its square overflows a float
            ps[4].grad[500] = 3e19     # one element in a long tensor
            ps[5].grad.mul_(1e-25)     # squares below a float's range
            got = native.grad_stats(ps, ps)
            moved = [p for p in ps if p.grad is not None]
            want = reported([float(p.grad.double().square().sum()) if p.grad is not None else -1.0 for p in ps])
            want.append(sum(float(p.detach().double().square().sum()) for p in moved))  # not the one without
            self.assertEqual(len(got), len(want))
            for g, w in zip(got, want):
                self.assertAlmostEqual(g, w, delta=rel * abs(w))
            ps[4].grad[7] = math.nan  # propagates
            self.assertTrue(math.isnan(native.grad_stats(ps[4:5], [])[0]))

    def test_tensors_it_cannot_read_are_left_to_torch(self):
        p = self.param(4, 5)
        self.assertIsNotNone(native.grad_stats([p], [p]))
        for grad in (torch.randn(5, 4).t(), torch.randn(4, 5).to_sparse()):  # not contiguous; sparse
            p.grad = grad
            self.assertIsNone(native.grad_stats([p], []))
        self.assertIsNone(native.grad_stats([self.param(3, dtype=torch.float16)], []))  # not float32/64
        self.assertIsNone(native.grad_stats([self.param(3), self.param(3, dtype=torch.float64)], []))  # two dtypes
        self.assertIsNone(native.grad_stats([self.param(3)], [self.param(3, dtype=torch.float64)]))
        w = torch.nn.Parameter(torch.randn(2, 4).t())  # a weight that is not contiguous, with a gradient
        w.grad = torch.randn(4, 2)
        self.assertIsNone(native.grad_stats([self.param(3)], [w]))
        w.grad = None  # without one it does not count
        self.assertIsNotNone(native.grad_stats([self.param(3)], [w]))

    def test_sgd_sums_take_each_layer_and_each_group_with_and_without_buffers(self):
        ps = [self.param(3, 2), self.param(5), self.param(4, grad=False), self.param(2), self.param(6)]
        bufs = [torch.randn(3, 2), None, torch.randn(4), None]
        # Two groups: ps[0..2] and ps[3]; ps[4] is a layer no group moves.
        coefficients = [1.0, 0.1, 0.9, 0.1, 0.0, 0.0, 1.0, -0.2]  # the second: full dampening
        # The state in another order than the parameters, and one for a parameter no group has.
        order = [2, 3, 0, 1]
        got = native.sgd_step_stats(ps, ps[:4], [3, 1], coefficients, [ps[i] for i in order] + [ps[4]],
                                    [bufs[i] for i in order] + [torch.randn(6)])
        sq = lambda x: float(x.double().square().sum())  # noqa: E731
        g, w = [p.grad.double() if p.grad is not None else None for p in ps], [p.detach().double() for p in ps]
        want = reported([sq(ps[0].grad), sq(ps[1].grad), -1.0, sq(ps[3].grad), sq(ps[4].grad)]) + [
                sq(w[0]) + sq(w[1]) + sq(w[3]),                          # the weights moved, with a gradient
                sq(g[0] + 0.1 * w[0] + 0.9 * bufs[0].double()),         # group 1, with a buffer
                sq(g[1] + 0.1 * w[1]),                                  # group 1, without
                0.0, sq(g[3] - 0.2 * w[3])]                              # group 2
        self.assertEqual(len(got), len(want))
        for x, y in zip(got, want):
            self.assertAlmostEqual(x, y, delta=1e-6 * abs(y))  # float32: summed in float

    def test_lists_that_do_not_go_together_are_left_to_torch(self):
        p, x, c = self.param(4), torch.randn(4), [1.0, 0.0, 0.9, 0.0]
        self.assertIsNone(native.sgd_step_stats([p], [p], [1], c, [p, p], [x]))                # fewer buffers
        self.assertIsNone(native.sgd_step_stats([p], [p], [1], c, [p], [torch.randn(3)]))      # sizes differ
        self.assertIsNone(native.sgd_step_stats([p], [p], [2], c, [p], [x]))                   # groups
        self.assertIsNone(native.sgd_step_stats([p], [p], [1], c[:3], [p], [x]))               # coefficients
        self.assertIsNone(native.sgd_step_stats([p], [p], [1], c, [p], [x.double()]))          # dtypes
        self.assertIsNotNone(native.sgd_step_stats([p], [p], [1], c, [p], [x]))
        self.assertIsNotNone(native.sgd_step_stats([p], [p], [1], c, [], []))                  # no state yet
        self.assertIsNone(native.adam_sumsq([p], [x, x], None, None, 0.0, 0.1, 0.1, 1.0, 1e-8))
        self.assertIsNone(native.adam_sumsq([p], None, [x.double()], None, 0.0, 0.1, 0.1, 1.0, 1e-8))
        self.assertIsNone(native.adam_sumsq([self.param(4, grad=False)], None, None, None, 0.0, 0.1, 0.1, 1.0, 1e-8))
        self.assertIsNotNone(native.adam_sumsq([p], [x], [x.abs()], None, 0.0, 0.1, 0.1, 1.0, 1e-8))

    def test_while_the_library_compiles_the_steps_are_measured_with_torch_ops(self):
        # The compiler waits on a FIFO until the child has measured once: compiling on first use
        # never holds a step up.
        with tempfile.TemporaryDirectory() as tmp:
            gate, cxx = os.path.join(tmp, "gate"), os.path.join(tmp, "cxx")
            os.mkfifo(gate)
            with open(cxx, "w") as f:
                f.write(f"#!/bin/sh\nread go < {gate}\nexec c++ \"$@\"\n")
            os.chmod(cxx, 0o755)
            env = dict(os.environ, CXX=cxx, GRADWATCH_NATIVE_DIR=os.path.join(tmp, "cache"),
                       PYTHONPATH=str(pathlib.Path(native.__file__).parents[2]))
            code = ("import torch\nfrom gradwatch.torch import native, grad_stats\n"
                    "x = torch.ones(3, requires_grad=True)\nx.sum().backward()\n"
                    "print(native.ready(), grad_stats([x]).global_norm)\n"
                    f"open({gate!r}, 'w').write('go\\n')\n"
                    "print(native.available(), native.ready(), grad_stats([x]).global_norm)\n")
            p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
            self.assertEqual(p.returncode, 0, p.stderr)
            before, after = (line.split() for line in p.stdout.splitlines())
            self.assertEqual(before[0], "False")                    # still compiling: torch ops
            self.assertEqual(after[:2], ["True", "True"])          # then loaded
            self.assertAlmostEqual(float(before[1]), math.sqrt(3), places=6)
            self.assertAlmostEqual(float(after[2]), math.sqrt(3), places=6)

    def test_a_library_that_does_not_compile_leaves_torch_ops_and_says_why(self):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, CXX="false", GRADWATCH_NATIVE_DIR=cache,
                       PYTHONPATH=str(pathlib.Path(native.__file__).parents[2]))
            p = subprocess.run([sys.executable, "-c", "from gradwatch.torch import native, grad_stats\n"
                                "import torch\nx = torch.ones(3, requires_grad=True)\nx.sum().backward()\n"
                                "print(native.available(), grad_stats([x]).global_norm)"],
                               env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            available, norm = p.stdout.split()
            self.assertEqual(available, "False")
            self.assertAlmostEqual(float(norm), math.sqrt(3), places=6)
            self.assertIn("the native step statistics did not compile (exit 1); measuring with torch ops", p.stderr)
            self.assertEqual(list(pathlib.Path(cache).rglob("*.so")), [])  # nothing half-built is kept


class UpdateSizeTest(unittest.TestCase):
    """The prediction equals the update optimizer.step() then applies."""

    def check(self, make_optimizer, warm_steps=2):
        for mode in MODES:
            with self.subTest(native=mode):
                self.check_mode(make_optimizer, warm_steps, mode)

    def check_mode(self, make_optimizer, warm_steps, mode, then=lambda opt: None):
        model, opt = warmed(lambda m: make_optimizer(m.parameters()), 5, warm_steps, 99)
        then(opt)
        predicted = predict_update(opt, native=mode)
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        moved = [p.grad is not None for p in model.parameters()]
        dw = math.sqrt(sum(float((p.detach() - b).double().norm()) ** 2
                           for p, b, m in zip(model.parameters(), before, moved) if m))
        w = math.sqrt(sum(float(b.double().norm()) ** 2 for b, m in zip(before, moved) if m))
        self.assertAlmostEqual(predicted.update_norm, dw, delta=1e-5 * dw + 1e-9)
        self.assertAlmostEqual(predicted.weight_norm, w, delta=1e-5 * w)
        self.assertAlmostEqual(predicted.ratio, dw / w, delta=1e-5 * dw / w + 1e-12)

    def test_sgd_nesterov(self):
        self.check(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True))

    def test_sgd_first_step_has_no_momentum_buffer(self):
        self.check(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), warm_steps=0)

    def test_sgd_with_momentum_turned_off_leaves_its_buffers_out(self):
        def momentum_off(opt):
            for group in opt.param_groups:
                group["momentum"] = 0
        for mode in MODES:
            with self.subTest(native=mode):
                self.check_mode(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3), 2, mode,
                                then=momentum_off)

    def test_sgd_plain_with_weight_decay_and_dampening(self):
        self.check(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.01))
        self.check(lambda p: torch.optim.SGD(p, lr=0.05))

    def test_adam_and_amsgrad(self):
        self.check(lambda p: torch.optim.Adam(p, lr=0.01))
        self.check(lambda p: torch.optim.Adam(p, lr=0.01), warm_steps=0)
        self.check(lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.1))

    def test_fused_prediction_equals_the_per_tensor_one(self):
        def two_groups(make, **first):
            return lambda model: make([{"params": model.fc1.parameters(), **first},
                                       {"params": list(model.fc2.parameters()) + list(model.unused.parameters())}])
        cases = {
            "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
            "sgd wd maximize": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=0.1, maximize=True),
            "nesterov wd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                                     weight_decay=0.01),
            "momentum dampening maximize": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5,
                                                                     dampening=0.3, maximize=True),
            "full dampening": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5, dampening=1.0),
            "sgd groups": two_groups(lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9), lr=0.3, nesterov=True),
            "adam": lambda m: torch.optim.Adam(m.parameters(), lr=0.01),
            "adam wd maximize": lambda m: torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1, maximize=True),
            "amsgrad": lambda m: torch.optim.Adam(m.parameters(), lr=0.01, amsgrad=True, betas=(0.5, 0.9)),
            "adam beta1 0": lambda m: torch.optim.Adam(m.parameters(), lr=0.01, betas=(0.0, 0.99)),
            "adam groups": two_groups(lambda g: torch.optim.Adam(g, lr=0.01), lr=0.03, weight_decay=0.2),
        }
        for (name, make), warm_steps, mode in itertools.product(cases.items(), (0, 1, 3), MODES):
            with self.subTest(name, warm_steps=warm_steps, native=mode):
                model, opt = warmed(make, 7, warm_steps, 42)
                slow = per_tensor_update(opt)
                self.assertAlmostEqual(predict_update(opt, native=mode).ratio, slow, delta=1e-5 * slow)
                self.assertAlmostEqual(step_stats(list(model.parameters()), opt, native=mode)[1].ratio, slow,
                                       delta=1e-5 * slow)

    def test_tensors_with_state_and_without_in_one_group(self):
        # fc2.weight missed the first step (for Adam: a step count of its own), fc2.bias both
        # (no momentum buffer, no Adam moments yet).
        for make in (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                     lambda p: torch.optim.Adam(p, lr=0.01)):
            torch.manual_seed(8)
            model = TinyNet()
            opt = make(model.parameters())
            for s in range(2):
                opt.zero_grad()
                backward(model, seed=s)
                model.fc2.bias.grad = None
                if s == 0:
                    model.fc2.weight.grad = None
                opt.step()
            opt.zero_grad()
            backward(model, seed=9)
            slow = per_tensor_update(opt)
            for mode in MODES:
                self.assertAlmostEqual(predict_update(opt, native=mode).ratio, slow, delta=1e-5 * slow)

    def test_other_optimizers_are_not_measured(self):
        model = TinyNet()
        backward(model)
        self.assertTrue(math.isnan(predict_update(torch.optim.AdamW(model.parameters())).ratio))

    def test_prediction_leaves_the_optimizer_untouched(self):
        model = TinyNet()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        backward(model)
        opt.step()
        state = copy.deepcopy(opt.state_dict())
        predict_update(opt)
        after = opt.state_dict()
        for k, v in state["state"].items():
            self.assertTrue(torch.equal(v["momentum_buffer"], after["state"][k]["momentum_buffer"]))


class StepStatsTest(TinyModelTest):
    """Gradient norms and the update size together, as the session takes them each step."""
    seed = 4

    def test_equals_grad_stats_and_predict_update(self):
        for opt in (torch.optim.SGD(self.params, lr=0.1, momentum=0.9, nesterov=True),
                    torch.optim.SGD(self.params, lr=0.1), torch.optim.Adam(self.params, lr=0.01)):
            opt.zero_grad()
            backward(self.model)
            opt.step()
            opt.zero_grad()
            backward(self.model, seed=1)
            for mode in MODES:
                with self.subTest(type(opt).__name__, native=mode):
                    grads, update = step_stats(self.params, opt, native=mode)
                    self.assertEqual(grads, grad_stats(self.params, native=mode))
                    self.assertAlmostEqual(update.ratio, predict_update(opt, native=mode).ratio, delta=1e-12)

    def test_without_an_optimizer_only_the_gradients(self):
        backward(self.model)
        for mode in MODES:
            grads, update = step_stats(self.params, None, native=mode)
            self.assertEqual(grads, grad_stats(self.params, native=mode))
            self.assertTrue(math.isnan(update.ratio))

    def test_everything_is_read_to_the_host_at_once(self):
        opt = torch.optim.Adam(self.params, lr=0.01)
        backward(self.model)
        opt.step()
        backward(self.model, seed=1)
        original = step_stats_module.host_floats
        # Torch ops: 4 gradients, 4 directions, 4 weights. Native sums: nothing left to torch.
        for mode, reads in ((False, [12]), (True, [])):
            calls = []
            step_stats_module.host_floats = lambda values: calls.append(len(values)) or original(values)
            try:
                step_stats(self.params, opt, native=mode)
            finally:
                step_stats_module.host_floats = original
            self.assertEqual(calls, reads, f"native={mode}")

    def test_host_floats_reads_cpu_values_as_the_stacked_copy_does(self):
        values = list(torch._foreach_norm([torch.randn(5) * 10.0 ** k for k in range(-30, 31, 10)], 2))
        self.assertEqual(host_floats(values), torch.stack(values).to("cpu", torch.float64).tolist())


if __name__ == "__main__":
    unittest.main()
