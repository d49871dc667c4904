"""gradwatch for a plain PyTorch training loop: report each step, apply the monitor's commands at
step boundaries, and take the update decision around optimizer.step(). The Python twin of the
C++ `gradwatch::torchmon::Session` (trainer/torch/include/gradwatch/torch/session.h).

    with Session(model, optimizer, monitor="127.0.0.1:7070", run_id="my-run",
                 loss_upper_bound=1.0) as gw:
        for step in gw.steps(total_steps):          # applies commands; ends once stopped
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if gw.before_update(loss, epoch=epoch):  # report, gate, clip
                optimizer.step()
            gw.after_update()                        # checkpoint every K healthy steps

begin_step (which steps() calls) applies every command received since the last step (clipping,
learning-rate scale, skip, rollback, stop, mode) and acknowledges it with this step. before_update
measures the gradients and the size of the update the optimizer proposes (||dw||/||w||) in one
fused torch._foreach_norm and one device-to-host copy for both (step_stats.py; CPU tensors in
one native call each, native.py), queues the
report for the background sender, in gated mode waits for the verdict (fail-open on timeout)
and applies it (skip, clip, or this step's learning rate scaled down), and clips; it returns
whether to apply the update.
after_update restores a learning rate a verdict scaled and keeps a checkpoint every K healthy
steps for rollback (and one of the initial state, step 0, from the start).

Not thread-safe: call from the training thread. Without a monitor (monitor=None) everything but
the reporting still works: clipping from the options, checkpoints.

Extra named scalars are not reported: the v1 contract (proto/gradwatch/v1/telemetry.proto) has
no field for user-defined per-step values, and the session does not invent one.
"""
import copy
import math
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Deque, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import collections

import torch

from gradwatch.reporter import Reporter, ReporterOptions, ReporterStats, TlsFiles
from gradwatch.reporter_process import ProcessReporter
from gradwatch.torch import native
from gradwatch.torch.step_stats import step_stats
from gradwatch.v1 import telemetry_pb2 as pb

__all__ = ["AppliedCommand", "CheckpointError", "Clip", "Session", "SessionError"]

VERSION = "gradwatch.torch (python) 0.1.0"
_ALPHA = 0.97    # EWMA of healthy log grad norm (ZClip's)
_WARMUP = 25
_SPIKE_Z = 3.0   # above this a step is not healthy for statistics or checkpoints
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_MODES = {"observe": pb.MODE_OBSERVE, "guard": pb.MODE_GUARD, "gated": pb.MODE_GATED}
_MODE_NAMES = {v: k for k, v in _MODES.items()}
_CLIP_KINDS = {"off": pb.Clipping.KIND_OFF, "norm": pb.Clipping.KIND_NORM, "value": pb.Clipping.KIND_VALUE,
               "adaptive": pb.Clipping.KIND_ADAPTIVE}
_CLIP_NAMES = {v: k for k, v in _CLIP_KINDS.items()}


class SessionError(RuntimeError):
    """The session was used out of order (before_update without begin_step, a step after
    finish(), a step number that does not increase)."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written to checkpoint_dir: "checkpoint: cannot write PATH: ..."."""


@dataclass(frozen=True)
class Clip:
    """Gradient clipping in force: kind "off", "norm" (the global L2 norm at most `threshold`),
    "value" (each element clamped to [-threshold, threshold]) or "adaptive" (norm clipping at a
    threshold from the healthy statistics; 0 = derive it when applied)."""
    kind: str = "off"
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _CLIP_KINDS:
            raise ValueError(f"Clip: kind must be one of {sorted(_CLIP_KINDS)}, got {self.kind!r}")
        if not math.isfinite(self.threshold) or self.threshold < 0 or \
                (self.kind in ("norm", "value") and self.threshold <= 0):
            raise ValueError(f"Clip: threshold must be > 0 for {self.kind!r} clipping, got {self.threshold}")

    def __str__(self) -> str:
        return {"off": "clipping off", "norm": f"clip global norm at {self.threshold:g}",
                "value": f"clip values at {self.threshold:g}",
                "adaptive": f"adaptive norm clipping at {self.threshold:g}"}[self.kind]

    def wire_fields(self) -> Dict[str, Any]:
        """pb.Clipping's fields."""
        return {"kind": _CLIP_KINDS[self.kind], "threshold": self.threshold}

    @staticmethod
    def from_wire(c: "pb.Clipping") -> "Clip":
        """A clipping from the monitor; one it cannot apply (a threshold <= 0 or not finite) is off."""
        kind = _CLIP_NAMES.get(c.kind, "off")
        try:
            return Clip(kind, c.threshold if kind != "off" else 0.0)
        except ValueError:
            return Clip()


@dataclass(frozen=True)
class AppliedCommand:
    """A command the session applied (or rejected), acknowledged with `step`."""
    id: str
    action: str   # "set_clipping", "scale_learning_rate", "skip_step", "rollback", "stop", "set_mode"
    detail: str   # as acknowledged, e.g. "restored the checkpoint of step 350"
    step: int
    applied: bool


@dataclass
class _Checkpoint:
    step: int                 # state after this many updates
    model: Dict[str, Any]
    optimizer: Dict[str, Any]


def _default_run_id() -> str:
    return f"run-{int(time.time())}-{os.getpid()}"


def _check_mapping(name: str, values: Optional[Mapping[str, Any]], numbers: bool) -> Dict[str, Any]:
    out = dict(values or {})
    for k, v in out.items():
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) if numbers else isinstance(v, str)
        if not isinstance(k, str) or not ok:
            raise TypeError(f"Session: {name} must map str to {'numbers' if numbers else 'str'}, got {k!r}: {v!r}")
    return out


def _metrics(jaccard_soft: Optional[float], jaccard_hard: Optional[float], accuracy: Optional[float]) -> Dict[str, float]:
    """The segmentation metrics of a step or eval report, as its fields; None = not measured, left unset."""
    return {name: float(value) for name, value in
            (("jaccard_soft", jaccard_soft), ("jaccard_hard", jaccard_hard), ("accuracy", accuracy)) if value is not None}


def _snapshot(value: Any) -> Any:
    """A copy of a state dict that shares nothing mutable with it: tensors cloned (detached),
    dicts, lists and tuples copied, anything else deep-copied. copy.deepcopy of a whole optimizer
    state dict spends ~15 us of bookkeeping per tensor; this, ~2 us."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if type(value) is dict:
        return {k: _snapshot(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)([_snapshot(v) for v in value])
    return copy.deepcopy(value)


def _write_atomically(path: str, obj: Any) -> None:
    """torch.save to a temporary file beside `path`, fsynced, then renamed over it."""
    folder = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    except OSError as e:
        raise CheckpointError(f"checkpoint: cannot write {path}: {e.strerror or e}") from e


class Session:
    """Guards one training run of `model` trained by `optimizer` (every parameter the optimizer
    updates must belong to the model).

    monitor: host:port of gradwatchd; None or "" = no monitor (clipping and checkpoints only).
    run_id: [A-Za-z0-9._-]{1,128}; None = "run-<unix time>-<pid>".
    mode: "observe" (events only), "guard" (automatic commands from the next step, the default) or
        "gated" (guard, plus a verdict on each update before it lands, waited for `gate_timeout`
        seconds, then fail-open).
    loss, loss_upper_bound: e.g. "jaccard" and 1.0: a bounded loss tells the monitor what a
        collapse looks like. model_name, optimizer_name, batch_size, total_steps, eval_every,
        labels, thresholds (detector overrides) and policy (guard overrides) go into the hello's
        RunConfig as they are.
    device: for display; None = the device of the model's first parameter.
    checkpoint_every: keep a rollback checkpoint every N healthy steps (0 = none: a rollback is
        rejected); checkpoints_kept of them in memory, newest last. checkpoint_dir: also written
        there (step-N.model.pt, step-N.optim.pt, each replaced atomically); a failed write raises
        CheckpointError.
    spool: a file for reports past the buffer and all undelivered at finish() (the C++ reporter's
        format: `gradwatch replay FILE` delivers it); None = none.
    clipping: in force from the start. measure_update: predict ||dw||/||w|| each step (SGD and
        Adam; what lets gated mode veto a learning-rate spike). log: one stderr line per command.
    token, tls: a reporter token and TLS files; None = $GRADWATCH_TOKEN and $GRADWATCH_TLS_*.
    reporter_process: run the gRPC client in a helper process (gradwatch.reporter_process), the
        default, so that its threads never take this process's GIL; False = threads in this
        process (reporter.Reporter).
    reporter: a ready reporter to use instead of connecting to `monitor` (a seam for tests; any
        object with Reporter's methods).

    Raises ValueError/TypeError for invalid arguments, CheckpointError for a checkpoint_dir that
    cannot be written.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 monitor: Optional[str] = None, run_id: Optional[str] = None, mode: str = "guard",
                 loss: str = "", loss_upper_bound: float = 0.0, model_name: str = "", optimizer_name: str = "",
                 batch_size: int = 0, total_steps: int = 0, eval_every: int = 0,
                 labels: Optional[Mapping[str, str]] = None, thresholds: Optional[Mapping[str, float]] = None,
                 policy: Optional[Mapping[str, float]] = None, device: Optional[str] = None,
                 gate_timeout: float = 0.2, checkpoint_every: int = 50, checkpoints_kept: int = 4,
                 checkpoint_dir: Optional[str] = None, spool: Optional[str] = None, clipping: Clip = Clip(),
                 measure_update: bool = True, log: bool = True, token: Optional[str] = None,
                 tls: Optional[TlsFiles] = None, reporter: Optional[Reporter] = None,
                 reporter_process: bool = True) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"Session: model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Session: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if mode not in _MODES:
            raise ValueError(f"Session: mode must be 'observe', 'guard' or 'gated', got {mode!r}")
        if not isinstance(clipping, Clip):
            raise TypeError(f"Session: clipping must be a gradwatch.torch.Clip, got {type(clipping).__name__}")
        run_id = _default_run_id() if run_id is None else run_id
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"Session: run_id must match [A-Za-z0-9._-]{{1,128}}, got {run_id!r}")
        for name, value in (("checkpoint_every", checkpoint_every), ("batch_size", batch_size),
                            ("total_steps", total_steps), ("eval_every", eval_every)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"Session: {name} must be an int >= 0, got {value!r}")
        if not isinstance(checkpoints_kept, int) or checkpoints_kept < 1:
            raise ValueError(f"Session: checkpoints_kept must be an int >= 1, got {checkpoints_kept!r}")
        if not gate_timeout >= 0:
            raise ValueError(f"Session: gate_timeout must be >= 0 seconds, got {gate_timeout!r}")
        if not loss_upper_bound >= 0:
            raise ValueError(f"Session: loss_upper_bound must be >= 0 (0 = unbounded), got {loss_upper_bound!r}")

        named = list(model.named_parameters())
        if not named:
            raise ValueError("Session: the model has no parameters")
        owned = {id(p) for _, p in named}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in owned:
                    raise ValueError("Session: the optimizer updates a parameter that is not in the model "
                                     "(a rollback could not restore it)")
        native.ready()  # the measuring's native library starts loading (or compiling) now
        self._model, self._optimizer = model, optimizer
        self.layer_names: List[str] = [n for n, _ in named]  # the hello's layer names, in report order
        self._params: List[torch.Tensor] = [p for _, p in named]
        self.run_id, self.mode = run_id, mode
        self._gate_timeout, self._measure_update, self._log = float(gate_timeout), measure_update, log
        self._checkpoint_every, self._checkpoints_kept = checkpoint_every, checkpoints_kept
        self._checkpoint_dir = checkpoint_dir or ""
        self._clipping = clipping
        self._lr_scale = 1.0
        self._skip_pending = 0
        self._step = 0                 # the step begun last
        self._phase = "idle"           # idle -> begun -> measured -> idle
        self._rolled_back_to, self._rolled_back = 0, False
        self._saved_lrs: List[float] = []  # per parameter group, while a verdict scaled them
        self._stop_requested = self._stopped = self._finished = False
        self._step_healthy = True
        self._step_start = time.monotonic()
        self.last_grad_norm = 0.0
        self.last_layer_norms: List[float] = []
        self.last_update_ratio = math.nan
        self.updates_skipped = self.updates_vetoed = 0
        self._log_mean = self._log_var = 0.0  # healthy grad-norm statistics (EWMA of log norm)
        self._healthy = 0
        self._last_eval_step = 0
        self._checkpoints: Deque[_Checkpoint] = collections.deque()
        self.applied_commands: List[AppliedCommand] = []

        self._reporter = reporter
        if self._reporter is None and monitor:
            config = pb.RunConfig(
                model=model_name or type(model).__name__, optimizer=optimizer_name or type(optimizer).__name__.lower(),
                learning_rate=float(optimizer.param_groups[0]["lr"]), batch_size=batch_size, total_steps=total_steps,
                eval_every=eval_every, loss=loss, loss_upper_bound=float(loss_upper_bound),
                checkpoint_every=checkpoint_every, labels=_check_mapping("labels", labels, False),
                thresholds=_check_mapping("thresholds", thresholds, True),
                policy=_check_mapping("policy", policy, True))
            hello = pb.Hello(run_id=run_id, layer_names=self.layer_names, config=config, mode=_MODES[mode],
                             trainer_version=VERSION, host=socket.gethostname()[:255],
                             device=device or str(self._params[0].device))
            options = ReporterOptions(address=monitor, token=os.environ.get("GRADWATCH_TOKEN", "") if token is None
                                      else token, tls=tls or TlsFiles.from_env(), spool_path=spool or "")
            self._reporter = ProcessReporter(options, hello) if reporter_process else Reporter(options, hello)
        if self._checkpoint_dir:
            try:
                os.makedirs(self._checkpoint_dir, exist_ok=True)
            except OSError as e:
                raise CheckpointError(f"checkpoint: cannot create {self._checkpoint_dir}: {e.strerror}") from e
        if checkpoint_every > 0:
            self._save_checkpoint(0)  # the initial state is healthy by definition

    # ---- the loop ----

    def steps(self, total: Optional[int] = None, start: Optional[int] = None) -> Iterator[int]:
        """Steps start, start + 1, ... (start defaults to the step after the last one begun, 1 at
        first) up to `total` inclusive (None = no end), each begun with begin_step; ends early
        once a stop command is applied."""
        step = self._step + 1 if start is None else start
        while (total is None or step <= total) and self.begin_step(step):
            yield step
            step += 1

    def begin_step(self, step: Optional[int] = None) -> bool:
        """Begins `step` (1-based, strictly increasing; None = the last one + 1): applies the
        commands received since the last step and acknowledges each with this step. Returns
        False once a stop command was applied: end the loop."""
        self._check_open("begin_step")
        step = self._step + 1 if step is None else step
        if not isinstance(step, int) or isinstance(step, bool) or step <= self._step:
            raise SessionError(f"begin_step: steps must be ints increasing from 1, got {step!r} after {self._step}")
        if self._phase == "measured":
            raise SessionError(f"begin_step: call after_update() for step {self._step} first")
        self._step, self._phase = step, "begun"
        self._step_start = time.monotonic()
        if self._reporter is not None:
            for command in self._reporter.take_commands():
                self._apply(command, step)
        if self._stop_requested:
            self._stopped, self._phase = True, "idle"
        return not self._stopped

    def set_learning_rate(self, base_lr: float) -> None:
        """Sets every parameter group's learning rate for this step to base_lr x lr_scale (for a
        loop that computes its own schedule). Without it, a learning-rate command scales the
        groups' rates in place."""
        for group in self._optimizer.param_groups:
            group["lr"] = base_lr * self._lr_scale

    def before_update(self, loss: Union[float, torch.Tensor], *, epoch: int = 0,
                      jaccard_soft: Optional[float] = None, jaccard_hard: Optional[float] = None,
                      accuracy: Optional[float] = None, sample_ids: Optional[Sequence[int]] = None,
                      scalars: Optional[Mapping[str, float]] = None) -> bool:
        """After backward, before optimizer.step(): measures and reports the step, in gated mode
        waits for the verdict, clips. Returns True to apply the update, False to skip it.
        `loss` may be a 0-dim tensor (read once); the metrics are this batch's, None = not
        measured; sample_ids are the batch's training items (the first 64 are reported);
        scalars are any named values of this step (the monitor takes at most 64, names of 1-64
        characters from A-Z a-z 0-9 _ . : / -), stored, exported and charted with the run."""
        self._check_open("before_update")
        named = _check_mapping("scalars", scalars, numbers=True)
        if self._phase != "begun":
            raise SessionError(f"before_update: call begin_step() first (step {self._step} "
                               f"{'was already measured' if self._phase == 'measured' else 'has not begun'})")
        self._phase = "measured"
        loss_value = float(loss.detach().item() if isinstance(loss, torch.Tensor) else loss)
        update = True
        applied = self._clipping
        if self._skip_pending > 0:
            self._skip_pending -= 1
            update = False
        # Before clipping and before any verdict: the update as the optimizer proposes it.
        (global_norm, layer_norms), proposed = step_stats(
            self._params, self._optimizer if update and self._measure_update else None)
        self.last_grad_norm, self.last_layer_norms = global_norm, layer_norms
        self.last_update_ratio = proposed.ratio
        self._update_health(global_norm, loss_value)
        if self._reporter is not None:
            awaiting = self.mode == "gated" and update
            # Fields rather than a message: the reporter's helper process builds it (see
            # ProcessReporter.report_step_fields).
            fields = dict(step=self._step, epoch=epoch, loss=loss_value,
                          learning_rate=float(self._optimizer.param_groups[0]["lr"]), grad_norm=global_norm,
                          layer_grad_norms=layer_norms, clipping=self._clipping.wire_fields(),
                          step_seconds=time.monotonic() - self._step_start, unix_millis=int(time.time() * 1000),
                          update_skipped=not update, rolled_back_to=self._rolled_back_to,
                          rolled_back=self._rolled_back, awaiting_verdict=awaiting)
            fields.update(_metrics(jaccard_soft, jaccard_hard, accuracy))
            if named:
                fields["scalars"] = {name: float(value) for name, value in named.items()}
            if not math.isnan(self.last_update_ratio):
                fields["update_ratio"] = self.last_update_ratio
            if sample_ids is not None:
                fields["sample_ids"] = [int(i) for i in list(sample_ids)[:64]]
            self._rolled_back_to, self._rolled_back = 0, False
            self._reporter.report_step_fields(fields)
            if awaiting:
                verdict = self._reporter.await_verdict(self._step, self._gate_timeout)
                if verdict is not None:
                    update, applied = self._apply_verdict(verdict, update, applied)
        if update and applied.kind != "off" and applied.threshold > 0:
            self._clip(applied, global_norm)
        if not update:
            self.updates_skipped += 1
        return update

    def after_update(self) -> None:
        """After the update (or its skip): restores a learning rate a verdict scaled, and keeps a
        checkpoint every checkpoint_every steps when the step was healthy."""
        self._check_open("after_update")
        if self._phase != "measured":
            raise SessionError(f"after_update: call before_update() first (step {self._step})")
        self._phase = "idle"
        if self._saved_lrs:
            for group, lr in zip(self._optimizer.param_groups, self._saved_lrs):
                group["lr"] = lr
            self._saved_lrs = []
        if self._checkpoint_every > 0 and self._step % self._checkpoint_every == 0 and self._step_healthy:
            self._save_checkpoint(self._step)

    def report_eval(self, loss: Union[float, torch.Tensor], *, step: Optional[int] = None,
                    jaccard_soft: Optional[float] = None, jaccard_hard: Optional[float] = None,
                    accuracy: Optional[float] = None) -> None:
        """Metrics on the validation split, taken after `step` (default: the last step reported,
        i.e. measured by before_update). Raises ValueError for a step not reported yet: the
        monitor refuses an eval ahead of its step's report, and for a step before the last eval's
        (evals are acknowledged in step order)."""
        self._check_open("report_eval")
        reported = self._step - 1 if self._phase == "begun" else self._step
        at = reported if step is None else step
        if not isinstance(at, int) or isinstance(at, bool) or not 1 <= at <= reported:
            raise ValueError(f"report_eval: step must be an int from 1 to the last step reported ({reported}), "
                             f"got {at!r}" + (" (no step reported yet)" if reported < 1 else ""))
        if at < self._last_eval_step:
            raise ValueError(f"report_eval: evals go in step order: step {at} after an eval of step "
                             f"{self._last_eval_step}")
        self._last_eval_step = at
        if self._reporter is None:
            return
        report = pb.EvalReport(step=at, loss=float(loss.item() if isinstance(loss, torch.Tensor) else loss),
                               **_metrics(jaccard_soft, jaccard_hard, accuracy))
        self._reporter.report_eval(report)

    def finish(self, timeout: float = 10.0) -> None:
        """Waits (at most `timeout` seconds; 1 s when no monitor is up) for the monitor to store
        everything, says goodbye and closes the stream; what is undelivered goes to the spool.
        Idempotent; the session cannot be used afterwards."""
        if self._finished:
            return
        self._finished = True
        if self._reporter is None:
            return
        # With no monitor up, waiting the whole deadline would only delay the end of training.
        if not self._reporter.stats().connected:
            timeout = min(timeout, 1.0)
        self._reporter.close(timeout)
        s = self._reporter.stats()
        if s.acked_through < self._step and self._log:
            print(f"gradwatch: the monitor stored steps up to {s.acked_through} of {self._step} "
                  f"({self._step - s.acked_through} not delivered, {s.dropped} dropped from a full buffer)",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()

    # ---- state ----

    @property
    def step(self) -> int:
        """The step begun last (0 before the first)."""
        return self._step

    @property
    def clipping(self) -> Clip:
        return self._clipping

    @property
    def lr_scale(self) -> float:
        """The product of the learning-rate commands applied so far (1 unless scaled)."""
        return self._lr_scale

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def monitored(self) -> bool:
        return self._reporter is not None

    @property
    def gate_timeouts(self) -> int:
        return self._reporter.stats().gate_timeouts if self._reporter is not None else 0

    @property
    def refused(self) -> str:
        """Why the monitor refused this run, "" when it guards it (or there is no monitor). While
        it is set the loop is unguarded: say so on every line printed."""
        return self._reporter.stats().refused if self._reporter is not None else ""

    def reporter_stats(self) -> Optional[ReporterStats]:
        """Delivery counters (sent, acknowledged, dropped, spooled...), None without a monitor."""
        return self._reporter.stats() if self._reporter is not None else None

    # ---- internals ----

    def _check_open(self, what: str) -> None:
        if self._finished:
            raise SessionError(f"{what}: the session is finished")

    def _update_health(self, global_norm: float, loss: float) -> None:
        """Healthy statistics, for adaptive clipping and for deciding what to checkpoint."""
        log_norm = math.log(max(global_norm, 1e-30)) if not math.isnan(global_norm) else math.nan
        z = (log_norm - self._log_mean) / math.sqrt(self._log_var + 1e-12) if self._healthy >= _WARMUP else 0.0
        finite = math.isfinite(global_norm) and math.isfinite(loss)
        self._step_healthy = finite and z < _SPIKE_Z
        if not finite:
            return
        # As ZClip does: a spike enters the statistics clamped to the threshold, so a slow drift
        # of the norm is followed while one outlier barely moves them.
        if self._healthy >= _WARMUP and z > _SPIKE_Z:
            log_norm = self._log_mean + _SPIKE_Z * math.sqrt(self._log_var)
        if self._healthy == 0:
            self._log_mean = log_norm
        d = log_norm - self._log_mean
        self._log_mean += (1 - _ALPHA) * d
        self._log_var = _ALPHA * (self._log_var + (1 - _ALPHA) * d * d)
        self._healthy += 1

    def _adaptive_threshold(self) -> float:
        if self._healthy < _WARMUP:
            return 1.0  # no statistics yet: the case's accepted fix
        return math.exp(self._log_mean + 3.0 * math.sqrt(self._log_var))

    @torch.no_grad()
    def _clip(self, clip: Clip, total_norm: float) -> None:
        grads = [p.grad for p in self._params if p.grad is not None]
        if not grads:
            return
        if clip.kind == "value":
            for g in grads:
                g.clamp_(-clip.threshold, clip.threshold)
            return
        coef = clip.threshold / (total_norm + 1e-6)
        if coef < 1.0:  # a NaN total: no clip (coef < 1 is false)
            torch._foreach_mul_(grads, coef)

    def _apply_verdict(self, verdict: "pb.Verdict", update: bool, applied: Clip):
        """A verdict other than proceed is a veto of the update as proposed."""
        d = verdict.decision
        if d == pb.Verdict.DECISION_SKIP:
            update = False
        elif d == pb.Verdict.DECISION_CLIP and math.isfinite(verdict.clip_norm) and verdict.clip_norm > 0:
            applied = Clip("norm", verdict.clip_norm)
        elif d == pb.Verdict.DECISION_SCALE_LR and 0 < verdict.lr_scale <= 1:
            # This step only: after_update puts the rates back.
            self._saved_lrs = [g["lr"] for g in self._optimizer.param_groups]
            for g in self._optimizer.param_groups:
                g["lr"] = g["lr"] * verdict.lr_scale
        else:
            return update, applied  # proceed, or nothing it could apply
        self.updates_vetoed += 1
        if self._log:
            print(f"gradwatch: step {self._step}: veto: {verdict.reason}", file=sys.stderr, flush=True)
        return update, applied

    def _apply(self, command: "pb.Command", step: int) -> None:
        action = command.WhichOneof("action") or "none"
        ok, detail = True, ""
        if action == "set_clipping":
            clip = Clip.from_wire(command.set_clipping)
            if clip.kind == "adaptive" and clip.threshold <= 0:
                clip = Clip("adaptive", self._adaptive_threshold())
            self._clipping, detail = clip, str(clip)
        elif action == "scale_learning_rate":
            factor = command.scale_learning_rate
            if math.isfinite(factor) and factor > 0:
                self._lr_scale *= factor
                for group in self._optimizer.param_groups:
                    group["lr"] = group["lr"] * factor
                detail = f"learning rate x{factor:g} (scale now {self._lr_scale:g})"
            else:
                ok, detail = False, f"learning rate scale must be > 0, got {factor:g}"
        elif action == "skip_step":
            self._skip_pending += max(1, command.skip_step.count)
            detail = f"skipping {self._skip_pending} update(s)"
        elif action == "rollback":
            ok, detail = self._rollback(command.rollback.to_step)
        elif action == "stop":
            if self._checkpoint_every > 0 or self._checkpoint_dir:
                self._save_checkpoint(step - 1)
            self._stop_requested = True
            detail = f"stopping before step {step}"
        elif action == "set_mode":
            self.mode = _MODE_NAMES.get(command.set_mode, "guard")
            detail = f"mode {self.mode}"
        else:
            ok, detail = False, "unknown action"
        result = pb.CommandAck.RESULT_APPLIED if ok else pb.CommandAck.RESULT_REJECTED
        self._reporter.ack_command(pb.CommandAck(command_id=command.id, applied_at_step=step, result=result,
                                                 detail=detail))
        self.applied_commands.append(AppliedCommand(command.id, action, detail, step, ok))
        if self._log:
            print(f"gradwatch: step {step}: {'applied' if ok else 'rejected'} {command.id} ({command.issued_by}): "
                  f"{detail} — {command.reason}", file=sys.stderr, flush=True)

    def _rollback(self, to_step: int):
        """Restores the newest checkpoint at or before to_step (0 = the newest of all): weights and
        optimizer state; the learning rates in force stay (they are the schedule's and the
        monitor's, not the checkpoint's)."""
        for i in range(len(self._checkpoints) - 1, -1, -1):
            c = self._checkpoints[i]
            if to_step != 0 and c.step > to_step:
                continue
            lrs = [g["lr"] for g in self._optimizer.param_groups]
            self._model.load_state_dict(c.model)
            # load_state_dict replaces the whole state: momentum built from the bad steps is gone.
            self._optimizer.load_state_dict(c.optimizer)
            for group, lr in zip(self._optimizer.param_groups, lrs):
                group["lr"] = lr
            self._rolled_back_to, self._rolled_back = c.step, True
            while len(self._checkpoints) > i + 1:  # later ones belong to the abandoned trajectory
                self._checkpoints.pop()
            return True, f"restored the checkpoint of step {c.step}"
        return False, (f"no checkpoint at or before step {to_step}" if to_step else "no checkpoint yet")

    def _save_checkpoint(self, step: int) -> None:
        model = _snapshot(dict(self._model.state_dict()))
        optimizer = _snapshot(self._optimizer.state_dict())
        if self._checkpoint_dir:
            # Each file is replaced atomically and fsynced: a failed write ends the run with the
            # path and the reason rather than leaving a truncated checkpoint to load.
            base = os.path.join(self._checkpoint_dir, f"step-{step}")
            _write_atomically(base + ".model.pt", model)
            _write_atomically(base + ".optim.pt", optimizer)
        self._checkpoints.append(_Checkpoint(step, model, optimizer))
        while len(self._checkpoints) > self._checkpoints_kept:
            self._checkpoints.popleft()
