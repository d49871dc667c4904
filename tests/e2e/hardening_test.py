"""Every finding of the attacker / careless-user review (issue "Hardening"), replayed against
one live monitor while a real trainer streams a guarded run through it. After each bad
input the monitor must still be up, the run must keep being stored and acknowledged, and
the bad input must get a clear error. At the end the run holds every step exactly once.
"""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import gwtest

CLI = gwtest.BIN / "gradwatch"
TRAINER = gwtest.BIN / "gradwatch-train"


def http(mon, path, data=None, headers=None, method=None):
    """(status, body) of one request to the monitor's HTTP port."""
    req = urllib.request.Request(f"http://127.0.0.1:{mon.metrics_port}{path}", data=data, headers=headers or {},
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Checks:
    """Keeps the live run under watch between findings."""

    def __init__(self, mon, run_id):
        self.mon, self.run_id, self.last = mon, run_id, 0

    def still_guarding(self, finding):
        assert self.mon.proc.poll() is None, f"gradwatchd exited after: {finding}\n{self.mon.output()}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            p = subprocess.run([str(CLI), "--server", self.mon.address, "--json", "run", self.run_id],
                               capture_output=True, text=True)
            if p.returncode == 0:
                steps = json.loads(p.stdout)["steps"]
                if steps > self.last:
                    self.last = steps
                    print(f"ok: {finding} (run {self.run_id} at {steps} stored steps)")
                    return
            time.sleep(0.1)
        raise AssertionError(f"the run stopped being stored after: {finding}")


def http_findings(mon, checks):
    for query in ("abc", "99999999999999999999999", "-1", ""):
        status, body = http(mon, f"/api/v1/runs/{checks.run_id}/steps?after={query}")
        if query == "":
            assert status in (200, 400), (status, body)
        else:
            assert status == 400 and "after" in body, (query, status, body)
    checks.still_guarding("GET steps?after=abc / 10^23 / -1")
    for payload in ('{"alerts":[1]}', '{"alerts":[{"labels":"x"}]}', '{"alerts":[{"labels":{"run_id":7}}]}',
                    '{"alerts":"no"}', "[]", "not json", '{"alerts":[{"labels":{"run_id":"live"},"annotations":3}]}'):
        status, body = http(mon, "/api/v1/alerts/webhook", payload.encode(), {"Content-Type": "application/json"})
        assert status in (200, 400), (payload, status, body)
        assert "error" in body or "recorded" in body, (payload, body)
    checks.still_guarding("malformed Alertmanager payloads")
    # What a web page can send without a preflight, and a cross-site Origin.
    status, body = http(mon, "/api/v1/alerts/webhook", b'{"alerts":[]}', {"Content-Type": "text/plain"})
    assert status in (400, 415), (status, body)
    status, body = http(mon, "/api/v1/alerts/webhook", b'{"alerts":[]}',
                        {"Content-Type": "application/json", "Origin": "http://evil.example"})
    assert status == 403, (status, body)
    status, body = http(mon, "/api/v1/alerts/webhook", b"x" * (2 << 20), {"Content-Type": "application/json"})
    assert status == 413, (status, body[:200])
    checks.still_guarding("CSRF-shaped and oversized webhook posts")


def starvation(mon, checks):
    """50 clients that send a header byte a second must not starve /metrics."""
    stop = threading.Event()
    socks = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", mon.metrics_port))
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        socks.append(s)

    def drip():
        while not stop.is_set():
            for s in socks:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            stop.wait(1)

    t = threading.Thread(target=drip)
    t.start()
    try:
        answered = 0
        for _ in range(10):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mon.metrics_port}/metrics", timeout=2) as r:
                    answered += r.status == 200
            except OSError:
                pass
        print(f"/metrics answered {answered} of 10 probes with 50 slow clients connected")
        assert answered == 10, answered
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()
    checks.still_guarding("50 slow HTTP clients")


def held_lock(mon, checks):
    """Another process holds the database's write lock for longer than the busy timeout."""
    db = sqlite3.connect(os.path.join(mon.data_dir, "gradwatch.db"), timeout=1)
    db.execute("BEGIN IMMEDIATE")
    time.sleep(7)  # longer than the store's 5 s busy timeout: this used to abort the monitor
    errors = gwtest.metric_value(mon.scrape(), "gradwatch_store_errors_total")
    healthy = gwtest.metric_value(mon.scrape(), "gradwatch_store_healthy")
    db.rollback()
    db.close()
    print(f"while the lock was held: gradwatch_store_errors_total {errors}, gradwatch_store_healthy {healthy}")
    assert errors and errors > 0, errors
    assert healthy == 0, healthy
    checks.still_guarding("a write lock held for 7 s")
    deadline = time.monotonic() + 30
    while gwtest.metric_value(mon.scrape(), "gradwatch_store_healthy") != 1:
        assert time.monotonic() < deadline, "the store did not report healthy again"
        time.sleep(0.2)


def stream_edges(mon, checks, pb):
    """Edge values on a raw telemetry stream of a second run."""
    import grpc
    telemetry_pb2, runs_pb2, runs_pb2_grpc, telemetry_pb2_grpc = pb
    channel = grpc.insecure_channel(mon.address)
    call = channel.stream_stream("/gradwatch.v1.Telemetry/Stream", request_serializer=None,
                                 response_deserializer=telemetry_pb2.MonitorMessage.FromString)
    T = telemetry_pb2.TrainerMessage
    hello = T(hello=telemetry_pb2.Hello(run_id="edges", layer_names=["a\x1b]0;owned\x07\x1b[2J"],
                                        trainer_instance=99)).SerializeToString()
    msgs = [hello,
            T(step=telemetry_pb2.StepReport(step=2**64 - 1, loss=0.5)).SerializeToString(),
            T(step=telemetry_pb2.StepReport(step=2**63, loss=0.5)).SerializeToString(),
            T(eval=telemetry_pb2.EvalReport(step=1_000_000, loss=0.5)).SerializeToString()]
    msgs += [T(step=telemetry_pb2.StepReport(step=s, loss=0.5, grad_norm=0.1, layer_grad_norms=[0.1])).SerializeToString()
             for s in (1, 2, 3)]
    msgs.append(b"\x0a\x03\x0a\x01\xff")  # a second hello whose run_id is not UTF-8: unparseable
    replies = list(call(iter(msgs), timeout=20))
    rejections = [r.rejection.reason for r in replies if r.HasField("rejection")]
    acks = [r.ack.stored_through_step for r in replies if r.HasField("ack")]
    print(f"edges: rejections {rejections}, acks {acks}")
    assert len(rejections) == 3 and all("9223372036854775807" in r for r in rejections[:2]), rejections
    assert "before that step's report" in rejections[2], rejections
    assert 1_000_000 not in acks and max(acks) <= 3, acks
    runs = runs_pb2_grpc.RunsStub(channel)
    run = runs.GetRun(runs_pb2.GetRunRequest(run_id="edges"))
    assert run.state != runs_pb2.RUN_STATE_FINISHED, "an unparseable message must not finish the run"
    # The stream broke before its acks: the steps are stored by the store's next group commit
    # (at most commit_interval_ms later), not necessarily before ListSteps is asked.
    stored = lambda: [s.step for s in runs.ListSteps(runs_pb2.ListStepsRequest(run_id="edges")).steps]
    gwtest.wait_until("steps 1, 2, 3 stored", lambda: stored() == [1, 2, 3], 10)
    assert stored() == [1, 2, 3], stored()
    # Hellos past the bounds are refused by name; the run list stays readable.
    for field, hello_msg in (("hello.host", telemetry_pb2.Hello(run_id="big", host="h" * (3 << 20))),
                             ("hello.layer_names", telemetry_pb2.Hello(run_id="big", layer_names=["x" * 300]))):
        try:
            list(telemetry_pb2_grpc.TelemetryStub(channel).Stream(iter([T(hello=hello_msg)]), timeout=20))
            raise AssertionError(f"a hello with an oversized {field} was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and field in e.details(), (e.code(), e.details())
    p = gwtest.run([CLI, "--server", mon.address, "runs"])
    assert "edges" in p.stdout, p.stdout
    # A layer name with terminal escapes reaches the operator escaped.
    p = gwtest.run([CLI, "--server", mon.address, "--json", "run", "edges"])
    p = gwtest.run([CLI, "--server", mon.address, "events", "edges"])
    for out in (p.stdout, gwtest.run([CLI, "--server", mon.address, "explain", "edges"]).stdout):
        assert "\x1b" not in out and "\x07" not in out, repr(out)
    checks.still_guarding("step 2^64-1 and 2^63, an eval ahead, unparseable bytes, oversized hellos")


def lifecycle(mon, checks, pb):
    """Finished runs do not use up --max-runs; a second trainer on a run id is refused loudly."""
    import grpc
    telemetry_pb2 = pb[0]
    T = telemetry_pb2.TrainerMessage
    channel = grpc.insecure_channel(mon.address)
    stub = pb[3].TelemetryStub(channel)
    for i in range(6):  # --max-runs 3: more finished runs than that
        msgs = [T(hello=telemetry_pb2.Hello(run_id=f"done-{i}", trainer_instance=1000 + i)),
                T(step=telemetry_pb2.StepReport(step=1, loss=0.5)), T(goodbye=telemetry_pb2.Goodbye(last_step=1))]
        list(stub.Stream(iter(msgs), timeout=20))
    checks.still_guarding("6 finished runs with --max-runs 3")
    tmp = tempfile.mkdtemp(prefix="gradwatch-second-")
    summary = os.path.join(tmp, "s.json")
    p = gwtest.run([TRAINER, "--monitor", mon.address, "--run-id", checks.run_id, "--steps", "60", "--log-every", "20",
                    "--eval-every", "0", "--summary-json", summary])
    lines = [l for l in p.stderr.splitlines() if l.startswith("step ")]
    print("second trainer on the same run id:\n  " + "\n  ".join(p.stderr.splitlines()[:3]))
    assert len(lines) == 3 and all("UNGUARDED" in l for l in lines), p.stderr
    assert "already holds steps" in json.load(open(summary))["monitor_refused"], open(summary).read()
    checks.still_guarding("a second trainer with the same run id")


def listening():
    """Addresses that are not (only) loopback, lists, and a port another monitor holds."""
    for args, says in ((["--listen", "127.attacker.example:0"], "cannot resolve"),
                       (["--metrics-listen", "127.0.0.1:0,0.0.0.0:0"], "not one HOST:PORT"),
                       (["--listen", "foo"], "not one HOST:PORT")):
        p = subprocess.run([str(gwtest.BIN / "gradwatchd"), *args, "--data-dir", tempfile.mkdtemp()],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and says in p.stderr, (args, p.returncode, p.stderr)
    with gwtest.Monitor() as first:
        p = subprocess.run([str(gwtest.BIN / "gradwatchd"), "--listen", first.address, "--metrics-listen", "",
                            "--data-dir", tempfile.mkdtemp()], capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "address in use" in p.stderr, (p.returncode, p.stderr)
    print("ok: listen addresses checked, a busy port refused")


def jobs():
    """A job that names the monitor's own files, a corrupt job record, bounds and the queue."""
    tmp = tempfile.mkdtemp(prefix="gradwatch-hardening-jobs-")
    data = os.path.join(tmp, "data")
    with gwtest.Monitor(data_dir=data) as mon:
        for sets, field in ((["trace_csv=job.json"], "trace_csv"), (["threads=100000"], "threads"),
                            (["steps=100000000000"], "steps"), (["data.size=100000"], "data.size")):
            args = [CLI, "--server", mon.address, "launch", "--detach", "--run-id", "j-" + field.replace(".", "-")]
            for item in sets:
                args += ["--set", item]
            p = gwtest.run(args, check=False)
            assert p.returncode != 0 and field in p.stderr, (sets, p.returncode, p.stderr)
        assert mon.proc.poll() is None, mon.output()
    os.makedirs(os.path.join(data, "jobs", "mangled"), exist_ok=True)
    open(os.path.join(data, "jobs", "mangled", "job.json"), "w").write("{not json")
    with gwtest.Monitor(data_dir=data) as mon:  # starts despite the corrupt record
        p = gwtest.run([CLI, "--server", mon.address, "--json", "jobs"])
        jobs = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
        mangled = [j for j in jobs if j.get("job_id") == "mangled"]
        assert mangled and mangled[0].get("state") == "lost", p.stdout
        assert os.path.exists(os.path.join(data, "jobs", "mangled", "job.json.corrupt"))
    print("ok: job paths, bounds and a corrupt job record")


def main():
    listening()
    jobs()
    stubs = tempfile.mkdtemp(prefix="gradwatch-hardening-")
    gwtest.generate_stubs(stubs)
    from gradwatch.v1 import runs_pb2, runs_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc
    pb = (telemetry_pb2, runs_pb2, runs_pb2_grpc, telemetry_pb2_grpc)
    tmp = tempfile.mkdtemp(prefix="gradwatch-hardening-")
    summary = os.path.join(tmp, "live.json")
    with gwtest.Monitor(extra_args=["--max-runs", "3"]) as mon:
        trainer = subprocess.Popen(
            [str(TRAINER), "--monitor", mon.address, "--run-id", "live", "--scenario", "seed", "--steps", "100000",
             "--log-every", "0", "--eval-every", "50", "--summary-json", summary],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            checks = Checks(mon, "live")
            checks.still_guarding("the trainer started")
            http_findings(mon, checks)
            stream_edges(mon, checks, pb)
            lifecycle(mon, checks, pb)
            starvation(mon, checks)
            held_lock(mon, checks)
            trainer.terminate()  # a graceful stop: everything reported is delivered first
            _, stderr = trainer.communicate(timeout=120)
            assert trainer.returncode == 143, (trainer.returncode, stderr[-2000:])
        finally:
            if trainer.poll() is None:
                trainer.kill()
        assert mon.proc.poll() is None, mon.output()
        steps_run = json.load(open(summary))["steps_run"]
        mon.stop()
        db = sqlite3.connect(os.path.join(mon.data_dir, "gradwatch.db"))
        count, distinct, low, high = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step) FROM steps WHERE run_id='live'").fetchone()
        print(f"live run: {steps_run} steps run, stored {count} rows, {distinct} distinct, {low}..{high}")
        assert (count, distinct, low, high) == (steps_run, steps_run, 1, steps_run)
    print("hardening: every finding answered, the monitor stayed up, the run was stored exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
