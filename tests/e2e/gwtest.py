"""Helpers for the end-to-end tests: start gradwatchd on free loopback ports, run binaries."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BIN = pathlib.Path(os.environ.get("GRADWATCH_BIN", "build/bin"))


class Monitor:
    """gradwatchd on 127.0.0.1:0, its ports read from --ports-file."""

    def __init__(self, data_dir=None, listen="127.0.0.1:0", extra_args=()):
        self.tmp = tempfile.TemporaryDirectory(prefix="gradwatch-e2e-")
        self.data_dir = data_dir or os.path.join(self.tmp.name, "data")
        self.ports_file = os.path.join(self.tmp.name, "ports.json")
        self.log = open(os.path.join(self.tmp.name, "gradwatchd.log"), "w+")
        self.proc = subprocess.Popen(
            [str(BIN / "gradwatchd"), "--listen", listen, "--metrics-listen", "127.0.0.1:0",
             "--data-dir", self.data_dir, "--ports-file", self.ports_file, *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.ports_file):
            if self.proc.poll() is not None:
                raise RuntimeError("gradwatchd exited early:\n" + self.output())
            if time.monotonic() > deadline:
                raise RuntimeError("gradwatchd did not write its ports file in 30 s")
            time.sleep(0.05)
        ports = json.load(open(self.ports_file))
        self.grpc_port, self.metrics_port = ports["grpc_port"], ports["metrics_port"]
        self.address = f"127.0.0.1:{self.grpc_port}"

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def scrape(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is not None:
            print("--- gradwatchd output ---\n" + self.output())


def run(args, timeout=300, check=True):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def http_get(url, timeout=10):
    """(status, body) of a GET, also for 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for_steps(address, run_id, at_least, trainer=None, timeout=60):
    """Waits until the monitor at `address` has stored `at_least` steps of the run (asked with
    `gradwatch run`); fails early when `trainer` (a Popen with stderr piped) ends before that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if trainer is not None and trainer.poll() is not None:
            raise AssertionError("the trainer ended early:\n" + trainer.stderr.read())
        p = subprocess.run([str(BIN / "gradwatch"), "--server", address, "--json", "run", run_id],
                           capture_output=True, text=True)
        if p.returncode == 0 and json.loads(p.stdout)["steps"] >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not reach {at_least} steps in {timeout} s")


def wait_until(what, fn, timeout=120, interval=0.1):
    """fn()'s first truthy value, asked every `interval` s; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metric_value(text, name, **labels):
    """The value of the one sample of `name` whose labels include `labels`, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if not (series == name or series.startswith(name + "{")):
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return None


def report_faults(scenario, sent, db, run_id):
    """Prints the scenario's delivery counts as a FAULTS line (bench/faults.py collects them)."""
    rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT step) FROM steps WHERE run_id=?", (run_id,)).fetchone()
    print("FAULTS " + json.dumps({"scenario": scenario, "sent": sent, "stored": distinct,
                                  "duplicated": rows - distinct, "lost": sent - distinct}))


def generate_stubs(out_dir):
    """Python stubs of proto/ (Debian's protoc and grpc_python_plugin) importable from out_dir."""
    proto_root = os.environ.get("GRADWATCH_PROTO", str(pathlib.Path(__file__).parents[2] / "proto"))
    plugin = shutil.which("grpc_python_plugin")
    assert plugin, "grpc_python_plugin not found (package protobuf-compiler-grpc)"
    files = [f"gradwatch/v1/{n}.proto" for n in ("telemetry", "runs", "jobs")]
    subprocess.run(["protoc", f"--proto_path={proto_root}", f"--python_out={out_dir}",
                    f"--grpc_out={out_dir}", f"--plugin=protoc-gen-grpc={plugin}", *files], check=True)
    for d in ("gradwatch", "gradwatch/v1"):
        pathlib.Path(out_dir, d, "__init__.py").touch()
    sys.path.insert(0, out_dir)
