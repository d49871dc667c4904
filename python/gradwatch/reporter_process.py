"""The reporter in a helper process: the training process keeps no gRPC thread.

gRPC's Python client runs several threads per stream (the request consumer, the completion-queue
poller, the response reader) that wake for every report sent and every acknowledgement received,
each taking the GIL. In the training process they compete with the loop for the GIL and, on a
small machine, for the cores: measured on the Python case (2 cores, CPU), about 1 ms of a 16 ms
step. ProcessReporter has Reporter's methods and semantics, but runs the Reporter (reporter.py,
unchanged) in a child process (`python3 -m gradwatch.reporter_process`) and talks to it over a
socket pair. Per step the training thread serializes its report and writes one frame: no thread
of its own wakes up, nothing waits on the network. The child runs as SCHED_BATCH, so that the
frame's wake-up does not preempt the training thread (see _no_wakeup_preemption).

The child pushes the commands it receives as they arrive; take_commands() reads what is there
without waiting. flush(), stats(), await_verdict() (gated mode) and close() are requests the child
answers. When the training process ends without close() (an exception, SIGKILL), the child sees
the socket close, flushes and spools what is undelivered as close() would, and exits.

Thread-safety: every method may be called from any thread (one lock around the socket).
"""
import mmap
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import replace
from typing import Any, List, Mapping, Optional

from gradwatch.reporter import Reporter, ReporterOptions, ReporterStats, random_instance
from gradwatch.v1 import telemetry_pb2 as pb

_HEADER = struct.Struct("!BI")  # kind, payload length
# The training process's frames.
_INIT, _STEP, _STEP_FIELDS, _EVAL, _ACK, _VERDICT, _FLUSH, _STATS, _CLOSE = b"HSPEAVFTC"
# The child's: pushed commands, and one reply per request.
_COMMANDS, _REPLY = b"KR"


# While step reports keep coming (one in the last _POLL_FOR_S seconds), the child reads the socket
# every _POLL_S seconds instead of waiting on it: a process waiting on a socket is woken by each
# write, and that wake-up is paid by the writer, the training thread, inside report_step (~15 us
# idle, ~50 us in the Python case's loop on 2 cores; ~3 us to write to a socket nobody waits on).
# A report reaches the monitor up to _POLL_S later. Steps further apart than _POLL_FOR_S, where a
# wake-up is a negligible part of a step, and gated steps (whose verdict request follows at once)
# keep the waiting reader.
_POLL_S = 0.001
_POLL_FOR_S = 0.05


def _frame(kind: int, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


class _Frames:
    """Frames from a stream socket, complete ones only."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf, self.eof = sock, bytearray(), False

    def read(self, timeout: Optional[float]) -> bool:
        """Waits up to `timeout` seconds (None = no limit; 0 or less = not at all) for bytes;
        False on timeout or EOF."""
        if self.eof:
            return False
        wait = timeout is None or timeout > 0
        if timeout is not None and wait and not select.select([self.sock], [], [], timeout)[0]:
            return False
        try:
            data = self.sock.recv(1 << 16, 0 if wait else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def next(self):
        """(kind, payload) of the first complete frame, or None."""
        if len(self.buf) < _HEADER.size:
            return None
        kind, n = _HEADER.unpack_from(self.buf)
        if len(self.buf) < _HEADER.size + n:
            return None
        payload = bytes(self.buf[_HEADER.size:_HEADER.size + n])
        del self.buf[:_HEADER.size + n]
        return kind, payload


class _PushCount:
    """How many command frames the child has pushed, in 8 bytes of memory both processes map
    (a memfd, Linux): take_commands reads it instead of asking the socket, a system call every
    step. A hint only: the child counts a frame after writing it, so a count that moved means
    the socket holds that frame; one not yet seen is seen at the next step."""
    _COUNT = struct.Struct("=Q")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, self._COUNT.size)

    @staticmethod
    def create() -> Optional["_PushCount"]:
        """A fresh count, or None where memfd_create is not available (then every step asks the
        socket)."""
        try:
            fd = os.memfd_create("gradwatch-reporter", os.MFD_CLOEXEC)
            os.ftruncate(fd, _PushCount._COUNT.size)
            return _PushCount(fd)
        except (AttributeError, OSError):
            return None

    def read(self) -> int:
        return self._COUNT.unpack_from(self._map)[0]

    def add(self) -> None:
        self._COUNT.pack_into(self._map, 0, self.read() + 1)  # the child alone writes

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


class ProcessReporter:
    """Reporter's interface, with the Reporter in a child process. Raises ValueError/OSError for
    options it cannot use (an empty address, a bad TLS pair or an unreadable file), as Reporter
    does, before starting the child; connecting happens in the background."""

    def __init__(self, options: ReporterOptions, hello: "pb.Hello", python: Optional[str] = None) -> None:
        if not options.address:
            raise ValueError("Reporter: options.address is empty (host:port of gradwatchd)")
        if options.max_buffered < 1:
            raise ValueError(f"Reporter: max_buffered must be >= 1, got {options.max_buffered}")
        options.tls.credentials()  # the same errors Reporter would raise, here and now
        self._hello = pb.Hello()
        self._hello.CopyFrom(hello)
        if self._hello.trainer_instance == 0:
            self._hello.trainer_instance = random_instance()
        self._log_warnings = options.log_warnings
        parent, child = socket.socketpair()
        self._pushes = _PushCount.create()
        self._pushes_seen = 0
        fds = (child.fileno(),) + ((self._pushes.fd,) if self._pushes is not None else ())
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self._proc = subprocess.Popen(
                [python or sys.executable, "-m", "gradwatch.reporter_process", *map(str, fds)],
                pass_fds=fds, stdin=subprocess.DEVNULL, env=env, close_fds=True)
        finally:
            child.close()
        self._sock = parent
        self._frames = _Frames(parent)
        self._lock = threading.Lock()
        self._commands: List[pb.Command] = []
        self._stats = ReporterStats()  # the last the child sent (final after close)
        self._gate_timeouts = 0        # counted here when the child cannot answer
        self._dead = self._closed = False
        self._send(_INIT, pickle.dumps((options, self._hello.SerializeToString())))

    # ---- the training thread's side ----

    def report_step(self, step: "pb.StepReport") -> None:
        """Queues one step report (one frame to the child); never blocks on the network."""
        with self._lock:
            self._send(_STEP, step.SerializeToString())

    def report_step_fields(self, fields: Mapping[str, Any]) -> None:
        """As Reporter.report_step_fields, but the child builds the message: this side pickles a
        dict. Run between a training step's backward and its update, protobuf's constructor and
        serializer took ~40 us a step in the Python case's loop (their code cold in the caches;
        ~6 us warm), pickle ~5 us. A field the message does not take is reported by the child,
        on stderr, and that report is lost."""
        with self._lock:
            self._send(_STEP_FIELDS, pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL))

    def report_eval(self, evaluation: "pb.EvalReport") -> None:
        with self._lock:
            self._send(_EVAL, evaluation.SerializeToString())

    def take_commands(self) -> List["pb.Command"]:
        """Commands received and not yet taken, in arrival order (reads what the child pushed)."""
        with self._lock:
            pushed = self._pushes.read() if self._pushes is not None else None
            if pushed is None or pushed != self._pushes_seen:
                self._pushes_seen = pushed or 0
                self._pump(0.0)
            out, self._commands = self._commands, []
            return out

    def await_commands(self, timeout: float) -> List["pb.Command"]:
        """As take_commands, but waits up to `timeout` seconds for at least one."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._pump(0.0)
            while not self._commands and not self._dead and self._pump(deadline - time.monotonic()):
                pass
            out, self._commands = self._commands, []
            return out

    def ack_command(self, ack: "pb.CommandAck") -> None:
        with self._lock:
            self._send(_ACK, ack.SerializeToString())

    def await_verdict(self, step: int, timeout: float) -> Optional["pb.Verdict"]:
        """Gated mode: the monitor's verdict on `step`, or None on timeout or when no stream is up
        (fail-open; counted in gate_timeouts)."""
        # The child waits `timeout`; the reply may take a little longer to come back.
        reply = self._request(_VERDICT, (step, timeout), timeout + 1.0)
        if reply is None:
            with self._lock:
                self._gate_timeouts += 1
            return None
        verdict_bytes, self._stats = reply
        return pb.Verdict.FromString(verdict_bytes) if verdict_bytes is not None else None

    def flush(self, timeout: float) -> bool:
        """Waits until every report is acknowledged or `timeout` seconds pass; True if all were."""
        reply = self._request(_FLUSH, timeout, timeout + 5.0)
        return bool(reply)

    def close(self, timeout: float = 2.0) -> None:
        """As Reporter.close: flushes (up to `timeout` seconds), says goodbye, spools what was not
        delivered; then the child exits. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Reporter.close takes up to timeout + 2 s (the half-close) + 5 s (the thread's end).
        reply = self._request(_CLOSE, timeout, timeout + 10.0)
        if reply is not None:
            self._stats = reply
        with self._lock:
            self._dead = True
            self._sock.close()
            if self._pushes is not None:
                self._pushes.close()
                self._pushes = None
        try:
            self._proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def stats(self) -> ReporterStats:
        if not self._closed:
            reply = self._request(_STATS, None, 5.0)
            if reply is not None:
                self._stats = reply
        with self._lock:
            s = replace(self._stats)
            s.gate_timeouts += self._gate_timeouts
            return s

    @property
    def hello(self) -> "pb.Hello":
        """The hello as sent (with its trainer_instance)."""
        return self._hello

    # ---- internals; _send and _pump require the lock ----

    def _send(self, kind: int, payload: bytes) -> None:
        if self._dead:
            if kind == _STEP:
                self._stats.dropped += 1
            return
        try:
            self._sock.sendall(_frame(kind, payload))
        except OSError as e:
            self._child_gone(f"{e.strerror or e}")
            if kind == _STEP:
                self._stats.dropped += 1

    def _pump(self, timeout: Optional[float]) -> bool:
        """Reads what the child sent (waiting up to `timeout` seconds for something), keeps
        pushed commands and returns True if anything came; replies are left in the buffer."""
        if self._dead:
            return False
        got = self._frames.read(timeout)
        if self._frames.eof:
            self._child_gone("it exited")
        while self._peek_commands():
            pass
        return got

    def _peek_commands(self) -> bool:
        """Takes one leading commands frame off the buffer; False when the next is not one."""
        buf = self._frames.buf
        if len(buf) < _HEADER.size or buf[0] != _COMMANDS:
            return False
        kind, payload = self._frames.next() or (None, None)
        if kind is None:
            return False
        self._commands.extend(pb.Command.FromString(b) for b in pickle.loads(payload))
        return True

    def _request(self, kind: int, arg, timeout: float):
        """Sends a request and waits up to `timeout` seconds for its reply (commands that come
        first are kept); None when the child does not answer."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._dead:
                return None
            self._send(kind, pickle.dumps(arg))
            while not self._dead:
                self._peek_commands()
                f = self._frames.next() if self._frames.buf[:1] == bytes([_REPLY]) else None
                if f is not None:
                    return pickle.loads(f[1])
                left = deadline - time.monotonic()
                if left <= 0:
                    # A late reply would be taken for the next request's: this link is unusable.
                    self._child_gone(f"no answer in {timeout:g} s")
                    return None
                self._frames.read(left)
                if self._frames.eof:
                    self._child_gone("it exited")
            return None

    def _child_gone(self, why: str) -> None:
        if not self._dead:
            self._dead = True
            if self._log_warnings and not self._closed:
                print(f"gradwatch: the reporter process stopped ({why}); further reports are dropped",
                      file=sys.stderr, flush=True)


# ---- the child ----

def _serve(sock: socket.socket, pushes: Optional[_PushCount]) -> int:
    frames = _Frames(sock)
    write_lock = threading.Lock()

    def send(kind: int, payload: bytes) -> None:
        with write_lock:
            sock.sendall(_frame(kind, payload))
            if kind == _COMMANDS and pushes is not None:
                pushes.add()

    while (f := frames.next()) is None:
        if not frames.read(None):
            return 1
    kind, payload = f
    if kind != _INIT:
        return 2
    options, hello_bytes = pickle.loads(payload)
    # No tick here: each report wakes the sender, which sleeps otherwise.
    reporter = Reporter(replace(options, send_interval=0), pb.Hello.FromString(hello_bytes))
    stop = threading.Event()

    def push_commands() -> None:
        # Commands go to the training process as they arrive: take_commands there never waits.
        while not stop.is_set():
            commands = reporter.await_commands(0.5)
            if commands:
                try:
                    send(_COMMANDS, pickle.dumps([c.SerializeToString() for c in commands]))
                except OSError:
                    return

    pusher = threading.Thread(target=push_commands, name="gradwatch-commands", daemon=True)
    pusher.start()
    poll_until = 0.0  # while steps come, the socket is polled, not waited on (see _POLL_S)
    try:
        while True:
            f = frames.next()
            if f is None:
                if time.monotonic() < poll_until and not frames.eof:
                    if not frames.read(0) and not frames.eof:
                        time.sleep(_POLL_S)
                    continue
                if not frames.read(None):
                    break  # the training process is gone without close(): close as it would have
                continue
            kind, payload = f
            if kind in (_STEP, _STEP_FIELDS):
                try:
                    report = pb.StepReport.FromString(payload) if kind == _STEP else \
                        pb.StepReport(**pickle.loads(payload))
                except (ValueError, TypeError) as e:  # a bug of the caller's: say so, keep going
                    print(f"gradwatch: the reporter process could not read a step report ({e}); it is not "
                          "sent", file=sys.stderr, flush=True)
                    continue
                reporter.report_step(report)
                # A step that waits for its verdict is followed by the request at once: wait on
                # the socket for it. Otherwise the next step comes a step's time later.
                poll_until = 0.0 if report.awaiting_verdict else time.monotonic() + _POLL_FOR_S
            elif kind == _EVAL:
                reporter.report_eval(pb.EvalReport.FromString(payload))
            elif kind == _ACK:
                reporter.ack_command(pb.CommandAck.FromString(payload))
            elif kind == _VERDICT:
                step, timeout = pickle.loads(payload)
                verdict = reporter.await_verdict(step, timeout)
                send(_REPLY, pickle.dumps((verdict.SerializeToString() if verdict is not None else None,
                                           reporter.stats())))
            elif kind == _FLUSH:
                send(_REPLY, pickle.dumps(reporter.flush(pickle.loads(payload))))
            elif kind == _STATS:
                send(_REPLY, pickle.dumps(reporter.stats()))
            elif kind == _CLOSE:
                stop.set()
                reporter.close(pickle.loads(payload))
                send(_REPLY, pickle.dumps(reporter.stats()))
                return 0
    except OSError:
        pass
    stop.set()
    reporter.close(2.0)
    return 0


def _no_wakeup_preemption() -> None:
    """SCHED_BATCH for this process and the threads it starts (gRPC's included). A frame on a
    Unix socket is a synchronous wake-up: Linux tends to put the reader on the writer's core and,
    at normal policy, lets it preempt the writer, so the training thread sat out the helper's turn
    inside report_step (median 0.3-1.4 ms on a busy 2-core machine; ~0.1 ms as a batch task). A
    batch task waits for the next scheduling point instead; it keeps its nice level and its
    share of the CPU, and in gated mode the training thread sleeps while it waits anyway."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass  # not Linux: the default policy


def main() -> int:
    # Ctrl-C is the training process's to handle; this one closes when that one closes it or exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _no_wakeup_preemption()
    sock = socket.socket(fileno=int(sys.argv[1]))
    pushes = _PushCount(int(sys.argv[2])) if len(sys.argv) > 2 else None
    try:
        return _serve(sock, pushes)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
