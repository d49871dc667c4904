"""The reporter against an in-process fake Telemetry service on 127.0.0.1:0: the hello, cumulative
acks, resend after a broken stream, commands and their acks, gated verdicts, the goodbye, the
spool when no monitor is there, and a refused run. Waits are on conditions, never sleeps."""
import os
import socket
import tempfile
import threading
import time
import unittest
from concurrent import futures

import grpc

import fakes  # noqa: F401  (the package on sys.path)
from gradwatch import spool
from gradwatch.reporter import Reporter, ReporterOptions
from gradwatch.reporter_process import ProcessReporter
from gradwatch.v1 import telemetry_pb2 as pb
from gradwatch.v1 import telemetry_pb2_grpc as pb_grpc

WAIT = 20.0  # seconds: a bound on waits for the other thread, never a sleep


class FakeMonitor(pb_grpc.TelemetryServicer):
    """Stores steps, acks each at once (unless told to hold back), answers the scripted way."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.streams = []       # the messages of each stream, in order
        self.stored = set()
        self.break_after = None  # end the first stream (UNAVAILABLE) on this step, unacknowledged
        self.ack_upto = None     # do not ack beyond this step on the first stream
        self.refuse = None       # a status code for every hello
        self.commands = {}       # step -> Command sent after that step arrives
        self.verdicts = {}       # step -> Verdict
        self.eval_acks = False   # acks carry stored_evals_through_step (a current monitor)
        self.hold_evals = False  # with eval_acks: store evals only once this is False again
        self.evals = set()       # evals stored
        self.held = set()        # evals received while held

    def Stream(self, requests, context):
        with self.cond:
            messages = []
            self.streams.append(messages)
            first = len(self.streams) == 1
        for m in requests:
            with self.cond:
                messages.append(m)
                self.cond.notify_all()
            kind = m.WhichOneof("kind")
            if kind == "hello":
                if self.refuse:
                    context.abort(self.refuse, "run r already holds steps up to 3")
                yield pb.MonitorMessage(ack=pb.Ack(stored_through_step=max(self.stored, default=0)))
            elif kind == "eval" and self.eval_acks:
                with self.cond:
                    (self.held if self.hold_evals else self.evals).add(m.eval.step)
                yield pb.MonitorMessage(ack=self.ack(max(self.stored, default=0)))
            elif kind == "step":
                n = m.step.step
                if first and self.break_after == n:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "monitor went away")
                if first and self.ack_upto is not None and n > self.ack_upto:
                    continue
                with self.cond:
                    self.stored.add(n)
                    if not self.hold_evals:
                        self.evals |= self.held
                        self.held.clear()
                yield pb.MonitorMessage(ack=self.ack(n))
                if n in self.verdicts:
                    yield pb.MonitorMessage(verdict=self.verdicts[n])
                if n in self.commands:
                    yield pb.MonitorMessage(command=self.commands[n])

    def ack(self, through: int) -> pb.Ack:
        if not self.eval_acks:
            return pb.Ack(stored_through_step=through)
        with self.cond:
            return pb.Ack(stored_through_step=through, stored_evals_through_step=max(self.evals, default=0))

    def wait_for(self, predicate):
        with self.cond:
            assert self.cond.wait_for(predicate, WAIT), "the fake monitor waited in vain"

    def all_messages(self, kind):
        with self.cond:
            return [m for s in self.streams for m in s if m.WhichOneof("kind") == kind]


class ReporterTest(unittest.TestCase):
    def setUp(self) -> None:
        self.monitor = FakeMonitor()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_TelemetryServicer_to_server(self.monitor, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.hello = pb.Hello(run_id="r", layer_names=["w"], mode=pb.MODE_GUARD)
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self) -> None:
        self.server.stop(None)
        self.tmp.cleanup()

    def reporter(self, address=None, **kw) -> Reporter:
        kw.setdefault("backoff_initial", 0.01)
        kw.setdefault("log_warnings", False)
        return Reporter(ReporterOptions(address=address or f"127.0.0.1:{self.port}", **kw), self.hello)

    def step(self, n, **kw) -> pb.StepReport:
        return pb.StepReport(step=n, loss=1.0 / n, layer_grad_norms=[0.1], **kw)

    def test_hello_first_steps_in_order_goodbye_last(self):
        rep = self.reporter()
        for n in range(1, 21):
            rep.report_step(self.step(n))
        rep.report_eval(pb.EvalReport(step=20, loss=0.1))
        self.assertTrue(rep.flush(WAIT))
        rep.close(WAIT)
        kinds = [m.WhichOneof("kind") for m in self.monitor.streams[0]]
        self.assertEqual(kinds, ["hello"] + ["step"] * 20 + ["eval", "goodbye"])
        hello = self.monitor.streams[0][0].hello
        self.assertNotEqual(hello.trainer_instance, 0)
        self.assertEqual((hello.run_id, list(hello.layer_names)), ("r", ["w"]))
        self.assertEqual(self.monitor.streams[0][-1].goodbye.last_step, 20)
        s = rep.stats()
        self.assertEqual((s.acked_through, s.reported, s.connects, s.dropped), (20, 20, 1, 0))

    def test_an_eval_is_released_by_the_evals_ack_not_by_its_steps(self):
        self.monitor.eval_acks = self.monitor.hold_evals = True
        rep = self.reporter()
        rep.report_step(self.step(1))
        rep.report_eval(pb.EvalReport(step=1, loss=0.1))
        rep.report_step(self.step(2))
        deadline = time.monotonic() + WAIT
        while rep.stats().acked_through < 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # waiting for the other thread, bounded: not a timing
        self.assertEqual(rep.stats().acked_through, 2)
        self.assertFalse(rep.flush(0.0), "the eval was released by its step's ack")
        self.monitor.hold_evals = False
        rep.report_step(self.step(3))  # the monitor stores the held eval with it
        self.assertTrue(rep.flush(WAIT))
        rep.close(WAIT)
        self.assertEqual(self.monitor.evals, {1})

    def test_a_broken_stream_is_resumed_and_every_unacknowledged_step_resent(self):
        self.monitor.ack_upto, self.monitor.break_after = 3, 6
        rep = self.reporter()
        for n in range(1, 11):
            rep.report_step(self.step(n))
        self.assertTrue(rep.flush(WAIT))
        rep.close(WAIT)
        self.assertEqual(self.monitor.stored, set(range(1, 11)))
        second = self.monitor.streams[1]
        first_hello, second_hello = self.monitor.streams[0][0].hello, second[0].hello
        self.assertEqual(second_hello.resume_after_step, 3)
        self.assertEqual(second_hello.trainer_instance, first_hello.trainer_instance)
        self.assertEqual([m.step.step for m in second if m.HasField("step")], list(range(4, 11)))
        self.assertEqual(rep.stats().connects, 2)

    def test_commands_are_taken_and_acknowledged(self):
        self.monitor.commands[2] = pb.Command(id="c-1", scale_learning_rate=0.5)
        rep = self.reporter()
        rep.report_step(self.step(1))
        rep.report_step(self.step(2))
        commands = rep.await_commands(WAIT)
        self.assertEqual([c.id for c in commands], ["c-1"])
        self.assertEqual(rep.take_commands(), [])
        rep.ack_command(pb.CommandAck(command_id="c-1", applied_at_step=3, result=pb.CommandAck.RESULT_APPLIED))
        self.monitor.wait_for(lambda: self.monitor.all_messages("command_ack") if self.monitor.streams else False)
        rep.close(WAIT)
        self.assertEqual(self.monitor.all_messages("command_ack")[0].command_ack.applied_at_step, 3)

    def process_reporter(self) -> ProcessReporter:
        return ProcessReporter(ReporterOptions(address=f"127.0.0.1:{self.port}", backoff_initial=0.01,
                                               log_warnings=False), self.hello)

    def test_a_report_given_as_fields_is_the_same_message_from_either_reporter(self):
        fields = dict(step=1, loss=0.5, layer_grad_norms=[0.25, 0.5], update_ratio=0.01, scalars={"a": 1.5},
                      clipping={"kind": pb.Clipping.KIND_NORM, "threshold": 2.0})
        for step, make in enumerate((self.reporter, self.process_reporter), 1):  # a step the monitor lacks
            rep = make()
            rep.report_step_fields(dict(fields, step=step))
            self.assertTrue(rep.flush(WAIT))
            rep.close(WAIT)
        self.assertEqual([m.step for m in self.monitor.all_messages("step")],
                         [pb.StepReport(**dict(fields, step=step)) for step in (1, 2)])

    def test_the_helper_process_hands_over_pushed_commands_without_being_asked(self):
        # take_commands reads a count the helper keeps of the command frames it pushed, not the
        # socket: a command pushed after the reports were acknowledged is still taken.
        self.monitor.commands[2] = pb.Command(id="c-1", scale_learning_rate=0.5)
        rep = self.process_reporter()
        rep.report_step(self.step(1))
        rep.report_step_fields(dict(step=2, loss=0.5, layer_grad_norms=[0.1]))
        self.assertTrue(rep.flush(WAIT))
        deadline, commands = time.monotonic() + WAIT, []
        while not commands and time.monotonic() < deadline:  # no wait to block on: poll until taken
            commands = rep.take_commands()
            threading.Event().wait(0.005)
        self.assertEqual([c.id for c in commands], ["c-1"])
        self.assertEqual(rep.take_commands(), [])
        rep.close(WAIT)

    def test_gated_verdict_arrives_and_a_missing_one_fails_open(self):
        self.monitor.verdicts[2] = pb.Verdict(step=2, decision=pb.Verdict.DECISION_SKIP)
        rep = self.reporter()
        self.assertIsNone(rep.await_verdict(1, WAIT))  # no stream up yet: at once, fail-open
        rep.report_step(self.step(1))
        self.assertTrue(rep.flush(WAIT))  # connected
        rep.report_step(self.step(2, awaiting_verdict=True))
        verdict = rep.await_verdict(2, WAIT)
        self.assertEqual(verdict.decision, pb.Verdict.DECISION_SKIP)
        rep.report_step(self.step(3, awaiting_verdict=True))
        self.assertIsNone(rep.await_verdict(3, 0.05))
        self.assertEqual(rep.stats().gate_timeouts, 2)
        rep.close(WAIT)

    def test_without_a_monitor_everything_lands_in_the_spool(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"127.0.0.1:{s.getsockname()[1]}"
        path = os.path.join(self.tmp.name, "run.spool")
        rep = self.reporter(address=closed, spool_path=path, max_buffered=4)
        for n in range(1, 11):
            rep.report_step(self.step(n))
        self.assertFalse(rep.flush(0.05))
        rep.close(0.05)
        s = rep.stats()
        self.assertEqual((s.spooled, s.dropped, s.acked_through), (10, 0, 0))
        c = spool.read(path)
        self.assertEqual(c.error, "")
        self.assertEqual(c.messages[0].hello.trainer_instance, rep.hello.trainer_instance)
        self.assertEqual(sorted(m.step.step for m in c.messages[1:]), list(range(1, 11)))

    def test_spooled_reports_are_resent_first_once_connected(self):
        path = os.path.join(self.tmp.name, "run.spool")
        rep = self.reporter(spool_path=path, max_buffered=2)
        for n in range(1, 8):
            rep.report_step(self.step(n))
        self.assertTrue(rep.flush(WAIT))
        rep.close(WAIT)
        self.assertEqual(self.monitor.stored, set(range(1, 8)))
        self.assertFalse(os.path.exists(path))  # delivered: nothing left to replay

    def test_a_refused_run_says_why_and_stops_trying(self):
        self.monitor.refuse = grpc.StatusCode.FAILED_PRECONDITION
        rep = self.reporter()
        rep.report_step(self.step(1))
        self.assertFalse(rep.flush(WAIT))  # returns once the refusal is final
        self.assertIn("already holds steps", rep.stats().refused)
        rep.close(0.05)
        self.assertEqual(len(self.monitor.streams), 1)

    def test_bad_options(self):
        with self.assertRaisesRegex(ValueError, "address"):
            Reporter(ReporterOptions(address=""), self.hello)


if __name__ == "__main__":
    unittest.main()
