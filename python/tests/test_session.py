"""The session applies commands at the next step boundary and acknowledges them with that step,
applies gated verdicts to the update in hand, clips, checkpoints and rolls back; misuse is a clear
error. A FakeReporter stands in for the monitor."""
import math
import os
import tempfile
import unittest

import torch

from fakes import FakeReporter, TinyNet, backward
from gradwatch.torch import CheckpointError, Clip, Session, SessionError
from gradwatch.v1 import telemetry_pb2 as pb


class SessionTest(unittest.TestCase):
    def setUp(self) -> None:
        torch.manual_seed(1)
        self.model = TinyNet()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.rep = FakeReporter()

    def session(self, **kw) -> Session:
        kw.setdefault("reporter", self.rep)
        kw.setdefault("log", False)
        return Session(self.model, self.opt, **kw)

    def one_step(self, gw: Session, scale: float = 1.0, step=None) -> bool:
        if not gw.begin_step(step):
            return False
        self.opt.zero_grad()
        loss = backward(self.model, seed=gw.step, scale=scale)
        update = gw.before_update(loss)
        if update:
            self.opt.step()
        gw.after_update()
        return update

    def test_reports_every_step_with_norms_in_layer_order(self):
        gw = self.session()
        for _ in range(3):
            self.one_step(gw)
        self.assertEqual([s.step for s in self.rep.steps], [1, 2, 3])
        r = self.rep.steps[-1]
        self.assertEqual(len(r.layer_grad_norms), len(gw.layer_names))
        self.assertEqual(gw.layer_names[:2], ["fc1.weight", "fc1.bias"])
        self.assertAlmostEqual(r.grad_norm, math.sqrt(sum(v * v for v in r.layer_grad_norms)), places=4)
        self.assertAlmostEqual(r.learning_rate, 0.1)
        self.assertTrue(r.HasField("update_ratio") and r.update_ratio > 0)
        self.assertFalse(r.HasField("jaccard_soft"))  # not measured is not 0
        self.assertFalse(r.awaiting_verdict)

    def test_metrics_and_sample_ids_are_reported_when_given(self):
        gw = self.session()
        gw.begin_step()
        backward(self.model)
        gw.before_update(torch.tensor(0.5), epoch=2, jaccard_soft=0.7, jaccard_hard=0.6, accuracy=0.9,
                         sample_ids=range(100))
        r = self.rep.steps[0]
        self.assertEqual((r.loss, r.epoch, r.jaccard_soft, r.jaccard_hard), (0.5, 2, 0.7, 0.6))
        self.assertEqual(list(r.sample_ids), list(range(64)))

    def test_named_scalars_are_reported_and_anything_but_numbers_refused(self):
        gw = self.session()
        gw.begin_step()
        backward(self.model)
        gw.before_update(0.5, scalars={"output_mean": 0.25, "data_ms": 3})
        self.assertEqual(dict(self.rep.steps[0].scalars), {"output_mean": 0.25, "data_ms": 3.0})
        gw.after_update()
        gw.begin_step()
        backward(self.model)
        with self.assertRaises(TypeError):
            gw.before_update(0.5, scalars={"output_mean": "high"})
        gw.before_update(0.5)  # the refusal left the step as it was
        self.assertEqual(len(self.rep.steps), 2)

    def test_clip_command_applies_at_the_next_step_and_is_acknowledged_with_it(self):
        gw = self.session()
        self.one_step(gw)
        command_id = self.rep.send(set_clipping=pb.Clipping(kind=pb.Clipping.KIND_NORM, threshold=0.01))
        self.one_step(gw)
        self.assertEqual(len(self.rep.acks), 1)
        ack = self.rep.acks[0]
        self.assertEqual((ack.command_id, ack.applied_at_step, ack.result), (command_id, 2, pb.CommandAck.RESULT_APPLIED))
        self.assertEqual(self.rep.steps[0].clipping.kind, pb.Clipping.KIND_OFF)
        self.assertEqual(self.rep.steps[1].clipping.kind, pb.Clipping.KIND_NORM)
        # The gradient the optimizer saw was clipped to 0.01; the report has the norm before.
        norm = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in self.model.parameters() if p.grad is not None))
        self.assertAlmostEqual(norm, 0.01, places=5)
        self.assertGreater(self.rep.steps[1].grad_norm, 0.01)
        self.assertEqual(gw.applied_commands[0].action, "set_clipping")

    def test_value_clipping_clamps_each_element(self):
        gw = self.session(clipping=Clip("value", 1e-3))
        self.one_step(gw, scale=100)
        self.assertLessEqual(max(float(p.grad.abs().max()) for p in self.model.parameters() if p.grad is not None),
                             1e-3 + 1e-9)

    def test_adaptive_clipping_without_a_threshold_uses_the_healthy_statistics(self):
        gw = self.session()
        self.one_step(gw)
        self.rep.send(set_clipping=pb.Clipping(kind=pb.Clipping.KIND_ADAPTIVE))
        self.one_step(gw)
        self.assertEqual(gw.clipping, Clip("adaptive", 1.0))  # no statistics yet: the case's fix
        for _ in range(30):
            self.one_step(gw)
        self.rep.send(set_clipping=pb.Clipping(kind=pb.Clipping.KIND_ADAPTIVE))
        self.one_step(gw)
        norms = [s.grad_norm for s in self.rep.steps]
        self.assertGreater(gw.clipping.threshold, min(norms))
        self.assertLess(gw.clipping.threshold, 100 * max(norms))

    def test_clipping_off_and_an_unusable_threshold_turn_it_off(self):
        gw = self.session(clipping=Clip("norm", 1.0))
        self.rep.send(set_clipping=pb.Clipping(kind=pb.Clipping.KIND_NORM, threshold=-3))
        self.one_step(gw)
        self.assertEqual(gw.clipping, Clip())

    def test_learning_rate_scale_multiplies_the_groups_and_set_learning_rate_keeps_it(self):
        gw = self.session()
        self.one_step(gw)
        self.rep.send(scale_learning_rate=0.5)
        self.one_step(gw)
        self.assertAlmostEqual(self.opt.param_groups[0]["lr"], 0.05)
        self.assertAlmostEqual(self.rep.steps[1].learning_rate, 0.05)
        gw.set_learning_rate(0.2)
        self.assertAlmostEqual(self.opt.param_groups[0]["lr"], 0.1)
        self.rep.send(scale_learning_rate=0.0)
        self.one_step(gw)
        self.assertEqual(self.rep.acks[-1].result, pb.CommandAck.RESULT_REJECTED)

    def test_skip_leaves_the_weights_alone_and_is_reported(self):
        gw = self.session()
        self.one_step(gw)
        self.rep.send(skip_step=pb.SkipStep(count=2))
        before = [p.detach().clone() for p in self.model.parameters()]
        self.assertFalse(self.one_step(gw))
        self.assertFalse(self.one_step(gw))
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(before, self.model.parameters())))
        self.assertTrue(self.one_step(gw))
        self.assertEqual([s.update_skipped for s in self.rep.steps], [False, True, True, False])
        self.assertEqual(gw.updates_skipped, 2)
        self.assertTrue(math.isnan(gw.last_update_ratio) is False)

    def test_rollback_restores_weights_and_optimizer_state_of_the_checkpoint(self):
        gw = self.session(checkpoint_every=2)
        for _ in range(2):
            self.one_step(gw)
        saved = [p.detach().clone() for p in self.model.parameters()]
        saved_bufs = {i: self.opt.state[p]["momentum_buffer"].clone()
                      for i, p in enumerate(self.model.parameters()) if p in self.opt.state}
        self.one_step(gw, scale=1000)  # a bad update
        self.rep.send(rollback=pb.Rollback())
        gw.begin_step()
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(saved, self.model.parameters())))
        params = list(self.model.parameters())
        for i, buf in saved_bufs.items():  # the momentum of the bad step is gone
            self.assertTrue(torch.equal(self.opt.state[params[i]]["momentum_buffer"], buf))
        self.opt.zero_grad()
        gw.before_update(backward(self.model))
        gw.after_update()
        ack = self.rep.acks[0]
        self.assertEqual((ack.applied_at_step, ack.detail), (4, "restored the checkpoint of step 2"))
        self.assertTrue(self.rep.steps[3].rolled_back and self.rep.steps[3].rolled_back_to == 2)
        self.one_step(gw)
        self.assertFalse(self.rep.steps[4].rolled_back)

    def test_rollback_to_step_zero_is_the_initial_state_and_keeps_the_learning_rate(self):
        initial = [p.detach().clone() for p in self.model.parameters()]
        gw = self.session()
        self.one_step(gw)
        self.rep.send(scale_learning_rate=0.5)
        self.rep.send(rollback=pb.Rollback(to_step=0))
        gw.begin_step()
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(initial, self.model.parameters())))
        self.assertAlmostEqual(self.opt.param_groups[0]["lr"], 0.05)
        self.assertEqual(self.opt.state_dict()["state"], {})

    def test_rollback_without_checkpoints_is_rejected(self):
        gw = self.session(checkpoint_every=0)
        self.rep.send(rollback=pb.Rollback())
        self.one_step(gw)
        ack = self.rep.acks[0]
        self.assertEqual((ack.result, ack.detail), (pb.CommandAck.RESULT_REJECTED, "no checkpoint yet"))

    def test_an_unhealthy_step_is_not_checkpointed(self):
        gw = self.session(checkpoint_every=1, checkpoints_kept=100)
        for _ in range(30):
            self.one_step(gw)
        self.one_step(gw, scale=1e6)  # step 31: a spike
        self.rep.send(rollback=pb.Rollback(to_step=31))
        self.one_step(gw)
        self.assertEqual(self.rep.acks[0].detail, "restored the checkpoint of step 30")

    def test_stop_ends_the_loop_at_the_next_boundary(self):
        gw = self.session()
        steps = []
        for step in gw.steps(100):
            steps.append(step)
            self.opt.zero_grad()
            gw.before_update(backward(self.model))
            gw.after_update()
            if step == 3:
                self.rep.send(stop=pb.Stop())
        self.assertEqual(steps, [1, 2, 3])
        self.assertTrue(gw.stopped)
        self.assertEqual((self.rep.acks[0].applied_at_step, self.rep.acks[0].detail), (4, "stopping before step 4"))
        self.assertFalse(gw.begin_step())

    def test_set_mode_switches_to_gated(self):
        gw = self.session()
        self.rep.send(set_mode=pb.MODE_GATED)
        self.one_step(gw)
        self.assertEqual(gw.mode, "gated")
        self.assertTrue(self.rep.steps[0].awaiting_verdict)
        self.assertEqual(self.rep.verdict_waits, [1])

    def test_gated_skip_verdict_vetoes_this_update(self):
        gw = self.session(mode="gated")
        self.rep.verdicts[1] = pb.Verdict(step=1, decision=pb.Verdict.DECISION_SKIP, reason="test")
        before = [p.detach().clone() for p in self.model.parameters()]
        self.assertFalse(self.one_step(gw))
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(before, self.model.parameters())))
        self.assertEqual((gw.updates_vetoed, gw.updates_skipped), (1, 1))
        self.assertTrue(self.one_step(gw))  # no verdict in time: fail-open

    def test_gated_clip_and_scale_verdicts_apply_to_this_step_only(self):
        gw = self.session(mode="gated")
        self.rep.verdicts[1] = pb.Verdict(step=1, decision=pb.Verdict.DECISION_CLIP, clip_norm=1e-3)
        gw.begin_step()
        backward(self.model)
        self.assertTrue(gw.before_update(1.0))
        norm = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in self.model.parameters() if p.grad is not None))
        self.assertAlmostEqual(norm, 1e-3, places=6)
        gw.after_update()
        self.assertEqual(gw.clipping, Clip())
        self.rep.verdicts[2] = pb.Verdict(step=2, decision=pb.Verdict.DECISION_SCALE_LR, lr_scale=0.1)
        gw.begin_step()
        backward(self.model)
        gw.before_update(1.0)
        self.assertAlmostEqual(self.opt.param_groups[0]["lr"], 0.01)
        gw.after_update()
        self.assertAlmostEqual(self.opt.param_groups[0]["lr"], 0.1)
        self.assertEqual(gw.updates_vetoed, 2)

    def test_a_skip_command_is_not_awaited_in_gated_mode(self):
        gw = self.session(mode="gated")
        self.rep.send(skip_step=pb.SkipStep(count=1))
        self.one_step(gw)
        self.assertEqual(self.rep.verdict_waits, [])

    def test_checkpoint_dir_gets_the_files_and_an_unwritable_one_raises(self):
        with tempfile.TemporaryDirectory() as d:
            gw = self.session(checkpoint_every=1, checkpoint_dir=d)
            self.one_step(gw)
            self.assertEqual(sorted(os.listdir(d)), ["step-0.model.pt", "step-0.optim.pt", "step-1.model.pt",
                                                     "step-1.optim.pt"])
            blocker = os.path.join(d, "file")
            open(blocker, "w").close()
            with self.assertRaisesRegex(CheckpointError, "checkpoint: cannot"):
                self.session(checkpoint_dir=os.path.join(blocker, "sub"))

    def test_finish_closes_and_the_context_manager_finishes(self):
        with self.session() as gw:
            self.one_step(gw)
        self.assertTrue(self.rep.closed)
        with self.assertRaisesRegex(SessionError, "finished"):
            gw.begin_step()
        gw.finish()  # idempotent


class MisuseTest(unittest.TestCase):
    def setUp(self) -> None:
        self.model = TinyNet()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def test_steps_out_of_order(self):
        gw = Session(self.model, self.opt, reporter=FakeReporter(), log=False)
        with self.assertRaisesRegex(SessionError, "begin_step\\(\\) first"):
            gw.before_update(1.0)
        gw.begin_step(5)
        with self.assertRaisesRegex(SessionError, "increasing"):
            gw.begin_step(5)
        with self.assertRaisesRegex(SessionError, "before_update\\(\\) first"):
            gw.after_update()
        backward(self.model)
        gw.before_update(1.0)
        with self.assertRaisesRegex(SessionError, "after_update\\(\\) for step 5"):
            gw.begin_step()

    def test_an_eval_is_taken_after_a_reported_step_only(self):
        rep = FakeReporter()
        gw = Session(self.model, self.opt, reporter=rep, log=False)
        with self.assertRaisesRegex(ValueError, "no step reported yet"):
            gw.report_eval(0.5)
        gw.begin_step()
        backward(self.model)
        gw.before_update(1.0)
        gw.after_update()
        gw.begin_step()  # step 2 begun, not reported
        gw.report_eval(0.4)  # after step 1
        with self.assertRaisesRegex(ValueError, r"last step reported \(1\), got 2"):
            gw.report_eval(0.4, step=2)
        gw.begin_step(5)
        backward(self.model)
        gw.before_update(1.0)
        gw.report_eval(0.3)  # after step 5
        with self.assertRaisesRegex(ValueError, "step order: step 4 after an eval of step 5"):
            gw.report_eval(0.3, step=4)
        gw.report_eval(0.2, step=5)  # the same step again is in order
        self.assertEqual([e.step for e in rep.evals], [1, 5, 5])

    def test_bad_arguments(self):
        cases = [(dict(mode="paranoid"), ValueError, "mode"), (dict(run_id="a b"), ValueError, "run_id"),
                 (dict(checkpoint_every=-1), ValueError, "checkpoint_every"),
                 (dict(clipping="norm"), TypeError, "Clip"),
                 (dict(monitor="127.0.0.1:1", labels={"a": 1}), TypeError, "labels")]
        for kw, error, text in cases:
            with self.subTest(kw=kw), self.assertRaisesRegex(error, text):
                Session(self.model, self.opt, log=False, **kw)
        with self.assertRaisesRegex(ValueError, "threshold must be > 0"):
            Clip("norm", 0)
        with self.assertRaisesRegex(ValueError, "kind"):
            Clip("global")
        with self.assertRaisesRegex(TypeError, "torch.nn.Module"):
            Session(object(), self.opt)
        other = torch.optim.SGD(TinyNet().parameters(), lr=0.1)
        with self.assertRaisesRegex(ValueError, "not in the model"):
            Session(self.model, other)

    def test_without_a_monitor_clipping_and_checkpoints_still_work(self):
        gw = Session(self.model, self.opt, clipping=Clip("norm", 1e-4), log=False)
        self.assertFalse(gw.monitored)
        gw.begin_step()
        backward(self.model, scale=10)
        gw.before_update(1.0)
        norm = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in self.model.parameters() if p.grad is not None))
        self.assertAlmostEqual(norm, 1e-4, places=7)
        gw.after_update()
        gw.finish()


if __name__ == "__main__":
    unittest.main()
