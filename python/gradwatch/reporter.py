"""The trainer's side of Telemetry.Stream, with no torch dependency: any training loop can
report steps through it. The Python twin of trainer/reporter (reporter.h), message for message.

It never blocks the training thread. report_step() appends to a bounded buffer and returns; a
connection thread owns the stream: it sends the hello (run id, layers, config, the resume point
and this process's trainer_instance), and once the monitor answers with its first Ack, the
buffered reports. It reconnects with exponential backoff and full jitter when the monitor is
away. Reports stay in the buffer until the monitor acknowledges them as stored (cumulatively) and
are resent after a reconnect; the monitor deduplicates on (run_id, step). When the buffer is full
the oldest report goes to the spool (spool.py) or, without one, is dropped and counted.

Commands queue up until the training thread takes them at a step boundary (take_commands) and
acknowledges them (ack_command). In gated mode the training thread waits for a step's verdict
with a deadline (await_verdict), failing open. close() flushes, sends a Goodbye and half-closes:
the run is finished, not broken; what could not be delivered goes to the spool for
`gradwatch replay`.

Thread-safety: every method may be called from any thread.
"""
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Deque, Dict, List, Mapping, Optional, Union

import collections

import grpc

from gradwatch import spool as spool_mod
from gradwatch.v1 import telemetry_pb2 as pb
from gradwatch.v1 import telemetry_pb2_grpc as pb_grpc

# A hello refused for good: reconnecting cannot help (bad input, credentials, a run id another
# trainer holds). RESOURCE_EXHAUSTED (the monitor's limit on live runs) is retried.
_FINAL_REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                   grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)


@dataclass
class TlsFiles:
    """TLS to the monitor: a PEM CA to trust ("" = plain), and a client certificate and key for a
    monitor that asks for one."""
    ca: str = ""
    cert: str = ""
    key: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca or self.cert)

    @staticmethod
    def from_env() -> "TlsFiles":
        """GRADWATCH_TLS_CA, GRADWATCH_TLS_CERT and GRADWATCH_TLS_KEY, as the C++ reporter reads them."""
        env = os.environ.get
        return TlsFiles(env("GRADWATCH_TLS_CA", ""), env("GRADWATCH_TLS_CERT", ""), env("GRADWATCH_TLS_KEY", ""))

    def credentials(self) -> Optional[grpc.ChannelCredentials]:
        """None for a plain channel. Raises ValueError for a certificate without its key (or the
        reverse) and OSError naming a file that cannot be read."""
        if not self.enabled:
            return None
        if bool(self.cert) != bool(self.key):
            raise ValueError("TLS: a client certificate needs its key and a key its certificate "
                             "(GRADWATCH_TLS_CERT with GRADWATCH_TLS_KEY)")

        def load(path: str) -> Optional[bytes]:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(load(self.ca), load(self.key), load(self.cert))


@dataclass
class ReporterOptions:
    address: str                      # host:port of gradwatchd
    token: str = ""                   # bearer token (a reporter token for this run), "" = none
    tls: TlsFiles = field(default_factory=TlsFiles)
    max_buffered: int = 100_000       # unacknowledged reports kept for resend
    backoff_initial: float = 0.2      # seconds
    backoff_max: float = 5.0
    # Buffered reports are sent on this tick (gated reports at once): bounds the delay to the
    # monitor while sparing the training thread a wake-up per step. 0 = no tick: each report
    # wakes the sender, which otherwise sleeps (what the helper process of reporter_process
    # uses: there a wake-up costs the training thread nothing, and an idle tick costs CPU).
    send_interval: float = 0.005
    log_warnings: bool = True         # one line on stderr when the monitor is unreachable
    # Beyond max_buffered, and for whatever is undelivered at close, reports go to this
    # append-only spool instead of being dropped; "" = no spool.
    spool_path: str = ""
    spool_max_bytes: int = 1 << 30


@dataclass
class ReporterStats:
    reported: int = 0        # report_step() calls
    sent: int = 0            # messages written to a stream (resends included)
    acked_through: int = 0   # highest step the monitor has stored
    dropped: int = 0         # reports dropped because the buffer (and the spool) was full
    spooled: int = 0         # reports written to the spool
    connects: int = 0        # streams opened and accepted
    rejections: int = 0      # reports the monitor refused in-band
    gate_timeouts: int = 0   # verdicts that did not come in time
    last_reported_step: int = 0
    connected: bool = False
    last_error: str = ""     # why the last stream ended, "" if none
    # Why the monitor refused this run ("" while it is guarded or still connecting). Training
    # continues unguarded meanwhile: callers should say so.
    refused: str = ""


def _step_of(m: "pb.TrainerMessage") -> int:
    return m.step.step if m.HasField("step") else m.eval.step


def random_instance() -> int:
    """A non-zero random id for Hello.trainer_instance."""
    v = 0
    while v == 0:
        v = int.from_bytes(os.urandom(8), "little")
    return v


class _Stream:
    """One Telemetry.Stream call's state, guarded by the reporter's lock."""

    def __init__(self) -> None:
        self.call: Optional[grpc.Future] = None
        self.accepted = False  # the monitor answered the hello
        self.ended = False     # the call is over: the request generator must return
        self.half_closed = False


class Reporter:
    """Starts the connection thread; connecting happens in the background. Raises ValueError
    for options it cannot use (an empty address, a bad TLS pair)."""

    def __init__(self, options: ReporterOptions, hello: "pb.Hello") -> None:
        if not options.address:
            raise ValueError("Reporter: options.address is empty (host:port of gradwatchd)")
        if options.max_buffered < 1:
            raise ValueError(f"Reporter: max_buffered must be >= 1, got {options.max_buffered}")
        self._o = options
        self._hello = pb.Hello()
        self._hello.CopyFrom(hello)
        if self._hello.trainer_instance == 0:  # names this process to the monitor (and in the spool)
            self._hello.trainer_instance = random_instance()
        channel_options = [
            # Find a half-open connection within 20 s (ping every 8 s, give up 8 s later), even idle.
            ("grpc.keepalive_time_ms", 8000), ("grpc.keepalive_timeout_ms", 8000),
            ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", int(options.backoff_initial * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(options.backoff_max * 1000)),
        ]
        creds = options.tls.credentials()
        self._channel = (grpc.secure_channel(options.address, creds, channel_options) if creds
                         else grpc.insecure_channel(options.address, channel_options))
        self._stub = pb_grpc.TelemetryStub(self._channel)
        self._metadata = (("authorization", "Bearer " + options.token),) if options.token else ()

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)     # the connection thread and the writer
        self._changed = threading.Condition(self._lock)  # flush, await_verdict
        self._commanded = threading.Condition(self._lock)  # await_commands
        self._buffer: Deque[pb.TrainerMessage] = collections.deque()  # unacknowledged, in order
        self._next_send = 0                               # index in _buffer of the next to send
        self._spool: Optional[spool_mod.Spool] = None     # older reports that did not fit
        self._spooled_through = 0
        self._spooled_evals_through = 0  # highest step of an eval in the spool
        self._eval_acks = False          # the monitor acknowledges evals apart from steps
        self._evals_acked_through = 0
        self._spool_resend: List[pb.TrainerMessage] = []  # the spool, loaded for this stream
        self._spool_next = 0
        self._acks: Deque[pb.TrainerMessage] = collections.deque()
        self._commands: List[pb.Command] = []
        self._verdicts: Dict[int, pb.Verdict] = {}
        self._stats = ReporterStats()
        self._stream: Optional[_Stream] = None
        self._closing = self._stopping = self._give_up = self._warned = False
        if options.spool_path:
            self._spool = spool_mod.Spool(options.spool_path, options.spool_max_bytes, self._hello)
            if self._spool.error:
                self._warn(self._spool.error + "; reports past the buffer will be dropped")
        self._thread = threading.Thread(target=self._run, name="gradwatch-reporter", daemon=True)
        self._thread.start()

    # ---- the training thread's side ----

    def report_step(self, step: "pb.StepReport") -> None:
        """Queues one step report; never blocks on the network."""
        with self._lock:
            self._stats.reported += 1
            self._stats.last_reported_step = max(self._stats.last_reported_step, step.step)
            self._enqueue(pb.TrainerMessage(step=step))
            if step.awaiting_verdict or self._o.send_interval <= 0:
                self._wake.notify_all()  # the trainer waits on this one, or there is no tick

    def report_step_fields(self, fields: Mapping[str, Any]) -> None:
        """report_step(pb.StepReport(**fields)): the report's fields by their names in the proto
        (a message field as a dict of its fields). Raises ValueError/TypeError for a field the
        message does not take."""
        self.report_step(pb.StepReport(**fields))

    def report_eval(self, evaluation: "pb.EvalReport") -> None:
        """Queues an eval report (sent on the next tick)."""
        with self._lock:
            self._enqueue(pb.TrainerMessage(eval=evaluation))
            if self._o.send_interval <= 0:
                self._wake.notify_all()

    def take_commands(self) -> List["pb.Command"]:
        """Commands received and not yet taken, in arrival order."""
        with self._lock:
            out, self._commands = self._commands, []
            return out

    def await_commands(self, timeout: float) -> List["pb.Command"]:
        """As take_commands, but waits up to `timeout` seconds for at least one."""
        with self._lock:
            self._commanded.wait_for(lambda: self._commands, timeout)
            out, self._commands = self._commands, []
            return out

    def ack_command(self, ack: "pb.CommandAck") -> None:
        with self._lock:
            self._acks.append(pb.TrainerMessage(command_ack=ack))
            self._wake.notify_all()

    def await_verdict(self, step: int, timeout: float) -> Optional["pb.Verdict"]:
        """Gated mode: the monitor's verdict on `step` (reported with awaiting_verdict), or None
        on timeout or when no stream is up (fail-open; counted in gate_timeouts)."""
        with self._lock:
            got = self._changed.wait_for(
                lambda: step in self._verdicts or not self._accepted() or self._stopping, timeout)
            verdict = self._verdicts.get(step)
            if not got or verdict is None:
                self._stats.gate_timeouts += 1
                return None
            for s in [s for s in self._verdicts if s <= step]:
                del self._verdicts[s]
            return verdict

    def flush(self, timeout: float) -> bool:
        """Waits until every report is acknowledged or `timeout` seconds pass; True if all were."""
        with self._lock:
            self._wake.notify_all()
            self._changed.wait_for(lambda: self._delivered() or self._give_up, timeout)
            return self._delivered()

    def close(self, timeout: float = 2.0) -> None:
        """Flushes (up to `timeout` seconds), says goodbye and half-closes the stream (the run is
        finished), spools what was not delivered, and stops the thread. Idempotent."""
        if not self._thread.is_alive() and self._stopping:
            return
        delivered = self.flush(timeout)
        with self._lock:
            self._closing = True
            if not self._delivered():
                self._stopping = True  # out of time: do not wait further
            if not delivered and self._spool is not None:
                # Keep what was not delivered: `gradwatch replay SPOOL` sends it later.
                while self._buffer:
                    self._overflow(self._buffer.popleft())
                self._next_send = 0
                self._warn(f"{self._spool.records} reports are in the spool {self._spool.path}; "
                           f"deliver them with: gradwatch replay {self._spool.path}")
            elif delivered and self._spool is not None and self._spool.records == 0:
                self._spool.close()
                spool_mod.remove(self._spool.path)  # nothing left to deliver
            self._wake.notify_all()
            # Give the half-close a moment to reach the monitor, then stop regardless.
            self._changed.wait_for(lambda: self._stream is None, 2.0)
            self._stopping = True
            stream = self._stream
            self._wake.notify_all()
        if stream is not None and stream.call is not None:
            stream.call.cancel()
        self._thread.join(5.0)
        with self._lock:
            if self._spool is not None:
                self._spool.close()
        self._channel.close()

    def stats(self) -> ReporterStats:
        with self._lock:
            return replace(self._stats)

    @property
    def hello(self) -> "pb.Hello":
        """The hello as sent (with its trainer_instance)."""
        return self._hello

    # ---- internals; every _method below that touches state requires the lock ----

    def _warn(self, line: str) -> None:
        if self._o.log_warnings:
            print("gradwatch: " + line, file=sys.stderr, flush=True)

    def _accepted(self) -> bool:
        return self._stream is not None and self._stream.accepted and not self._stream.ended

    def _delivered(self) -> bool:
        """Everything reported is acknowledged, the spool included."""
        return not self._buffer and (self._spool is None or self._spool.records == 0)

    def _overflow(self, m: "pb.TrainerMessage") -> None:
        if self._spool is not None and self._spool.append(m):
            self._stats.spooled += 1
            self._spooled_through = max(self._spooled_through, _step_of(m))
            if m.HasField("eval"):
                self._spooled_evals_through = max(self._spooled_evals_through, m.eval.step)
        else:
            self._stats.dropped += 1

    def _enqueue(self, m: "pb.TrainerMessage") -> None:
        if len(self._buffer) >= self._o.max_buffered:
            self._overflow(self._buffer.popleft())
            if self._next_send > 0:
                self._next_send -= 1
        self._buffer.append(m)

    def _on_message(self, stream: _Stream, m: "pb.MonitorMessage") -> None:
        with self._lock:
            kind = m.WhichOneof("kind")
            if kind == "ack":
                # The writer waits for the first (then it sends) and, closing, for the last (then
                # it says goodbye); an ack per report in between would only wake it for nothing.
                if not stream.accepted or self._closing:
                    self._wake.notify_all()
                self._on_ack(stream, m.ack)
            elif kind == "command":
                self._commands.append(m.command)
                self._commanded.notify_all()
            elif kind == "verdict":
                self._verdicts[m.verdict.step] = m.verdict
            elif kind == "rejection":
                self._stats.rejections += 1
                self._warn("the monitor refused a report: " + m.rejection.reason)
            self._changed.notify_all()

    def _acked(self, m: "pb.TrainerMessage") -> bool:
        """Whether the monitor has stored m: a step by its step's ack; an eval by the evals' own
        ack, or with its step from a monitor that does not send one (Ack in telemetry.proto)."""
        if m.HasField("step") or not self._eval_acks:
            return _step_of(m) <= self._stats.acked_through
        return m.eval.step <= self._evals_acked_through

    def _on_ack(self, stream: _Stream, ack: "pb.Ack") -> None:
        through = ack.stored_through_step
        if not stream.accepted:
            stream.accepted = True
            self._spool_next = 0
            self._spool_resend = self._spool.pending() if self._spool is not None else []
            self._stats.connected = True
            self._stats.connects += 1
            if self._stats.refused:
                self._warn(f"the monitor accepted run {self._hello.run_id}: guarded again")
            self._stats.refused = ""
            if self._warned:
                self._warn(f"connected to the monitor at {self._o.address}, resending "
                           f"{len(self._buffer)} buffered reports")
            self._warned = False
        self._stats.acked_through = max(self._stats.acked_through, through)
        if ack.HasField("stored_evals_through_step"):
            self._eval_acks = True
            self._evals_acked_through = max(self._evals_acked_through, ack.stored_evals_through_step)
        while self._buffer and self._acked(self._buffer[0]):
            self._buffer.popleft()
            if self._next_send > 0:
                self._next_send -= 1
        spool_stored = self._stats.acked_through >= self._spooled_through and (
            not self._eval_acks or self._evals_acked_through >= self._spooled_evals_through)
        if (self._spool is not None and self._spool.records > 0 and spool_stored
                and self._spool_next >= len(self._spool_resend)):
            self._spool.clear()  # everything spooled is stored
            self._spool_resend, self._spool_next = [], 0

    def _on_stream_done(self, code: grpc.StatusCode, details: str) -> None:
        with self._lock:
            stream = self._stream
            self._stats.connected = False
            if code != grpc.StatusCode.OK:
                self._stats.last_error = details or code.name
            final = code in _FINAL_REFUSALS
            if (final or code == grpc.StatusCode.RESOURCE_EXHAUSTED) and not stream.accepted:
                self._give_up = final
                if self._stats.refused != details:
                    self._warn(f"the monitor refused run {self._hello.run_id}: {details}; TRAINING CONTINUES "
                               "UNGUARDED" + ("" if final else " until it accepts (retrying)"))
                self._stats.refused = details
            elif not self._closing and code != grpc.StatusCode.OK and not self._warned:
                self._warned = True
                self._warn(f"monitor at {self._o.address} unreachable ({details}); training continues, reports "
                           f"are kept (up to {self._o.max_buffered}) and sent when it is back")
            self._changed.notify_all()

    def _next_message(self, stream: _Stream) -> Optional["pb.TrainerMessage"]:
        """What the stream writes next, or None when it should half-close. Waits on the tick."""
        with self._lock:
            while True:
                if stream.ended or self._stopping or stream.half_closed:
                    return None
                if stream.accepted:
                    m = self._pick()
                    if m is not None:
                        self._stats.sent += 1
                        return m
                    if self._closing and self._delivered():
                        # The run is over, not broken: goodbye, then the half-close.
                        stream.half_closed = True
                        return pb.TrainerMessage(goodbye=pb.Goodbye(last_step=self._stats.last_reported_step))
                # Reports are picked up on this tick rather than by waking this thread per report:
                # a wake-up per step costs the training thread a context switch.
                self._wake.wait(self._o.send_interval if self._o.send_interval > 0 else None)

    def _pick(self) -> Optional["pb.TrainerMessage"]:
        if self._acks:
            return self._acks.popleft()
        while self._spool_next < len(self._spool_resend):  # older first
            m = self._spool_resend[self._spool_next]
            self._spool_next += 1
            if not self._acked(m):
                return m
        if self._next_send < len(self._buffer):
            m = self._buffer[self._next_send]
            self._next_send += 1
            return m
        return None

    def _requests(self, stream: _Stream, hello: "pb.TrainerMessage"):
        # Runs on gRPC's request thread, which writes one message at a time: flow control for free.
        yield hello
        while True:
            m = self._next_message(stream)
            if m is None:
                return
            yield m

    def _run(self) -> None:
        rng = random.Random()
        backoff = self._o.backoff_initial
        while True:
            with self._lock:
                if self._stopping or self._give_up or (self._closing and self._delivered()):
                    break
                self._hello.resume_after_step = self._stats.acked_through
                hello = pb.TrainerMessage(hello=self._hello)
                stream = self._stream = _Stream()
            code, details = grpc.StatusCode.OK, ""
            try:
                call = self._stub.Stream(self._requests(stream, hello), metadata=self._metadata)
                with self._lock:
                    stream.call = call
                    if self._stopping:
                        call.cancel()
                for m in call:
                    self._on_message(stream, m)
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            self._on_stream_done(code, details)
            with self._lock:
                stream.ended = True
                was_accepted = stream.accepted
                self._stream = None
                self._next_send = 0  # resend everything not acknowledged
                self._spool_resend, self._spool_next = [], 0
                self._wake.notify_all()
                self._changed.notify_all()
                if self._closing or self._stopping:
                    break
                if was_accepted:
                    backoff = self._o.backoff_initial
                # Exponential backoff with full jitter, cut short by close().
                self._wake.wait_for(lambda: self._stopping or self._closing, rng.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, self._o.backoff_max)
        with self._lock:
            self._stream = None
            self._changed.notify_all()
