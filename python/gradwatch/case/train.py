"""The case's training loop in plain PyTorch, guarded by gradwatch.torch.Session: what
gradwatch-train does (trainer/train/trainer.cc), at a size that trains in seconds on a CPU.

    python3 -m gradwatch.case --no-monitor --summary-json out.json     # collapses at step 351
    python3 -m gradwatch.case --clip-norm 1.0 --no-monitor             # does not
    python3 -m gradwatch.case --monitor 127.0.0.1:7070                 # guard mode prevents it
"""
import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import torch

from gradwatch.case.data import augment_x6, make_synthetic
from gradwatch.case.jaccard import jaccard_coef_loss, segmentation_metrics
from gradwatch.case.unet import UNet


@dataclass
class CaseConfig:
    run_id: Optional[str] = None   # None = generated
    steps: int = 600
    seed: int = 7                  # model initialisation and batch order (the data has its own)
    batch: int = 4
    lr: float = 0.01               # SGD(momentum 0.9, Nesterov), as in the case
    depth: int = 3
    base: int = 8
    size: int = 32
    spike_step: Optional[int] = -1  # 0-based step whose gradient is x spike_factor; -1 = steps * 7 / 12
                                    # (350 of 600, like epoch 12 of the case); None = no fault
    spike_factor: float = 1000.0
    clip_norm: float = 0.0         # clipping from the start, 0 = off
    monitor: Optional[str] = None  # host:port of gradwatchd, None = no monitor
    mode: str = "guard"
    eval_every: int = 50
    checkpoint_every: int = 50
    spool: Optional[str] = None
    threads: int = 1               # torch intra-op threads
    log_every: int = 0


@dataclass
class CaseSummary:
    run_id: str = ""
    steps_run: int = 0
    final_train_loss: float = math.nan  # mean over the last 10 steps
    val_loss: float = math.nan
    val_jaccard_hard: float = math.nan
    collapsed: bool = False             # final train loss >= 0.99 and val hard Jaccard <= 0.01
    stopped_by_command: bool = False
    updates_skipped: int = 0
    updates_vetoed: int = 0
    seconds: float = 0.0
    commands_applied: List[Dict] = field(default_factory=list)
    loss_curve: List[float] = field(default_factory=list)


class BatchSampler:
    """Shuffled batches of indices in [0, n), a fresh permutation per epoch (the remainder of
    an epoch dropped), reproducible from the seed."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        if not 1 <= batch <= n:
            raise ValueError(f"BatchSampler: need 1 <= batch <= n, got batch {batch}, n {n}")
        self.n, self.batch, self.rng = n, batch, random.Random(seed)
        self.epoch, self._order = -1, []

    def next(self) -> List[int]:
        if len(self._order) < self.batch:
            self._order = list(range(self.n))
            self.rng.shuffle(self._order)
            self.epoch += 1
        out, self._order = self._order[:self.batch], self._order[self.batch:]
        return out


def build(config: CaseConfig):
    """(model, optimizer, train, val), seeded."""
    torch.manual_seed(config.seed)
    train, val = make_synthetic(size=config.size)
    train = augment_x6(train)
    model = UNet(in_channels=train.images.size(1), depth=config.depth, base=config.base)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True)
    return model, optimizer, train, val


@torch.no_grad()
def evaluate(model: torch.nn.Module, val) -> Dict[str, float]:
    pred = model(val.images)
    soft, hard, acc = segmentation_metrics(val.masks, pred)
    return {"loss": float(jaccard_coef_loss(val.masks, pred)), "jaccard_soft": soft, "jaccard_hard": hard,
            "accuracy": acc}


def spike_step(config: CaseConfig) -> Optional[int]:
    return config.steps * 7 // 12 if config.spike_step == -1 else config.spike_step


def train(config: CaseConfig) -> CaseSummary:
    """Runs the case; the session reports to config.monitor when set."""
    from gradwatch.torch import Clip, Session  # the session imports the stubs: only when used

    started = time.monotonic()
    torch.set_num_threads(config.threads)
    model, optimizer, data, val = build(config)
    sampler = BatchSampler(len(data), config.batch, config.seed)
    fault = spike_step(config)
    summary = CaseSummary()
    gw = Session(model, optimizer, monitor=config.monitor, run_id=config.run_id, mode=config.mode, loss="jaccard",
                 loss_upper_bound=1.0, model_name=f"unet(depth={config.depth},base={config.base})",
                 optimizer_name="sgd(nesterov)", batch_size=config.batch, total_steps=config.steps,
                 eval_every=config.eval_every, checkpoint_every=config.checkpoint_every, spool=config.spool,
                 clipping=Clip("norm", config.clip_norm) if config.clip_norm > 0 else Clip(),
                 labels={"case": "python"})
    summary.run_id = gw.run_id
    with gw:
        for step in gw.steps(config.steps):
            items = sampler.next()
            x, y = data.images[items], data.masks[items]
            optimizer.zero_grad()
            pred = model(x)
            loss = jaccard_coef_loss(y, pred)
            loss.backward()
            if fault is not None and step - 1 == fault:
                for p in model.parameters():
                    p.grad.mul_(config.spike_factor)
                print(f"case: step {step}: injected gradient x{config.spike_factor:g}", file=sys.stderr)
            soft, hard, acc = segmentation_metrics(y, pred.detach())
            loss_value = float(loss)
            if gw.before_update(loss_value, epoch=sampler.epoch, jaccard_soft=soft, jaccard_hard=hard,
                                accuracy=acc, sample_ids=items):
                optimizer.step()
            gw.after_update()
            summary.loss_curve.append(loss_value)
            summary.steps_run = step
            if config.eval_every and step % config.eval_every == 0:
                gw.report_eval(**evaluate(model, val))
            if config.log_every and step % config.log_every == 0:
                print(f"step {step:5d}/{config.steps}  loss {loss_value:.4f}  jaccard {hard:.3f}  grad_norm "
                      f"{gw.last_grad_norm:.4g}  lr {optimizer.param_groups[0]['lr']:.3g}"
                      f"{'  [clipping]' if gw.clipping.kind != 'off' else ''}", file=sys.stderr)
        summary.stopped_by_command = gw.stopped
        final = evaluate(model, val)
        if summary.steps_run and (not config.eval_every or summary.steps_run % config.eval_every):
            gw.report_eval(**final)
    tail = summary.loss_curve[-10:]
    summary.final_train_loss = sum(tail) / len(tail) if tail else math.nan
    summary.val_loss, summary.val_jaccard_hard = final["loss"], final["jaccard_hard"]
    summary.collapsed = summary.final_train_loss >= 0.99 and summary.val_jaccard_hard <= 0.01
    summary.updates_skipped, summary.updates_vetoed = gw.updates_skipped, gw.updates_vetoed
    summary.commands_applied = [asdict(c) for c in gw.applied_commands]
    summary.seconds = time.monotonic() - started
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m gradwatch.case", description=__doc__.splitlines()[0])
    d = CaseConfig()
    p.add_argument("--run-id")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--spike-step", type=int, default=d.spike_step,
                   help="0-based step whose gradient is x1000; -1 = steps*7/12, -2 = none")
    p.add_argument("--clip-norm", type=float, default=0.0)
    p.add_argument("--monitor")
    p.add_argument("--no-monitor", action="store_true")
    p.add_argument("--mode", choices=("observe", "guard", "gated"), default=d.mode)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--spool")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--summary-json")
    a = p.parse_args(argv)
    config = CaseConfig(run_id=a.run_id, steps=a.steps, seed=a.seed,
                        spike_step=None if a.spike_step == -2 else a.spike_step, clip_norm=a.clip_norm,
                        monitor=None if a.no_monitor else (a.monitor or "127.0.0.1:7070"), mode=a.mode,
                        eval_every=a.eval_every, checkpoint_every=a.checkpoint_every, spool=a.spool,
                        threads=a.threads, log_every=a.log_every)
    summary = train(config)
    text = json.dumps(asdict(summary), indent=2)
    if a.summary_json:
        with open(a.summary_json, "w") as f:
            f.write(text)
    print(f"case: run {summary.run_id}: {summary.steps_run} steps in {summary.seconds:.1f} s, final loss "
          f"{summary.final_train_loss:.4f}, val hard Jaccard {summary.val_jaccard_hard:.3g}"
          f"{', COLLAPSED' if summary.collapsed else ''}{', stopped by command' if summary.stopped_by_command else ''}",
          file=sys.stderr)
    return 0
