"""Test doubles: a reporter that records what the session sends and hands it scripted commands
and verdicts, and a tiny model."""
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from gradwatch.reporter import ReporterStats  # noqa: E402
from gradwatch.v1 import telemetry_pb2 as pb  # noqa: E402


class FakeReporter:
    """Reporter's interface, in memory."""

    def __init__(self) -> None:
        self.steps: List[pb.StepReport] = []
        self.evals: List[pb.EvalReport] = []
        self.acks: List[pb.CommandAck] = []
        self.commands: List[pb.Command] = []
        self.verdicts: Dict[int, pb.Verdict] = {}
        self.verdict_waits: List[int] = []
        self.closed = False
        self._stats = ReporterStats(connected=True)

    def send(self, **action) -> str:
        command_id = f"c-{len(self.commands) + len(self.acks) + 1:06d}"
        self.commands.append(pb.Command(id=command_id, reason="test", issued_by="operator:test", **action))
        return command_id

    def report_step(self, step: pb.StepReport) -> None:
        copy = pb.StepReport()
        copy.CopyFrom(step)
        self.steps.append(copy)
        self._stats.last_reported_step = step.step

    def report_step_fields(self, fields) -> None:
        self.report_step(pb.StepReport(**fields))

    def report_eval(self, evaluation: pb.EvalReport) -> None:
        self.evals.append(evaluation)

    def take_commands(self) -> List[pb.Command]:
        out, self.commands = self.commands, []
        return out

    def ack_command(self, ack: pb.CommandAck) -> None:
        self.acks.append(ack)

    def await_verdict(self, step: int, timeout: float) -> Optional[pb.Verdict]:
        self.verdict_waits.append(step)
        return self.verdicts.pop(step, None)

    def close(self, timeout: float) -> None:
        self.closed = True
        self._stats.acked_through = self._stats.last_reported_step

    def stats(self) -> ReporterStats:
        return self._stats


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 1)
        self.unused = torch.nn.Linear(2, 2)  # never gets a gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)


def backward(model: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> float:
    x, y = batch(seed)
    loss = torch.nn.functional.mse_loss(model(x), y) * scale
    loss.backward()
    return float(loss)
