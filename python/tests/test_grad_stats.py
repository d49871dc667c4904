"""Gradient norms from one fused computation, and the update size predicted before the step."""
import copy
import math
import unittest

import torch

from fakes import TinyNet, backward
from gradwatch.torch import grad_stats, predict_update
from gradwatch.torch.grad_stats import grad_stats_per_item


class GradStatsTest(unittest.TestCase):
    def setUp(self) -> None:
        torch.manual_seed(3)
        self.model = TinyNet()
        self.params = list(self.model.parameters())

    def test_fused_norms_equal_one_norm_per_parameter(self):
        backward(self.model)
        fused, slow = grad_stats(self.params), grad_stats_per_item(self.params)
        self.assertEqual(len(fused.layer_norms), len(self.params))
        for a, b in zip(fused.layer_norms, slow.layer_norms):
            self.assertAlmostEqual(a, b, places=6)
        flat = torch.cat([p.grad.flatten() for p in self.params if p.grad is not None]).double()
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
        stats = grad_stats(self.params)
        self.assertTrue(math.isnan(stats.layer_norms[0]))
        self.assertTrue(math.isinf(stats.layer_norms[2]))
        self.assertTrue(math.isnan(stats.global_norm))

    def test_one_host_copy(self):
        backward(self.model)
        calls = []
        original = torch.Tensor.tolist
        torch.Tensor.tolist = lambda t: calls.append(t.shape) or original(t)
        try:
            grad_stats(self.params)
        finally:
            torch.Tensor.tolist = original
        self.assertEqual(calls, [torch.Size([4])])  # fc1.weight, fc1.bias, fc2.weight, fc2.bias


class UpdateSizeTest(unittest.TestCase):
    """The prediction equals the update optimizer.step() then applies."""

    def check(self, make_optimizer, warm_steps=2):
        torch.manual_seed(5)
        model = TinyNet()
        opt = make_optimizer(model.parameters())
        for s in range(warm_steps):  # optimizer state (momentum, Adam moments) built up
            opt.zero_grad()
            backward(model, seed=s)
            opt.step()
        opt.zero_grad()
        backward(model, seed=99)
        predicted = predict_update(opt)
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

    def test_sgd_plain_with_weight_decay_and_dampening(self):
        self.check(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.01))
        self.check(lambda p: torch.optim.SGD(p, lr=0.05))

    def test_adam_and_amsgrad(self):
        self.check(lambda p: torch.optim.Adam(p, lr=0.01))
        self.check(lambda p: torch.optim.Adam(p, lr=0.01), warm_steps=0)
        self.check(lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.1))

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


if __name__ == "__main__":
    unittest.main()
