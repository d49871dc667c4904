"""Helpers for the e2e tests of the Python package (python/gradwatch): run the Python case
(`python3 -m gradwatch.case`) against a real gradwatchd, and ask the CLI about the run."""
import json
import os
import pathlib
import subprocess
import sys

import gwtest

PYTHON_DIR = pathlib.Path(__file__).resolve().parents[2] / "python"
sys.path.insert(0, str(PYTHON_DIR))
CLI = gwtest.BIN / "gradwatch"


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(PYTHON_DIR) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def case_command(*args):
    return [sys.executable, "-m", "gradwatch.case", *map(str, args)]


def run_case(tmp, name, *args, timeout=300):
    """Runs the case to its end; returns (summary, stderr)."""
    summary = os.path.join(tmp, name + ".json")
    p = subprocess.run(case_command("--summary-json", summary, *args), capture_output=True, text=True,
                       timeout=timeout, env=env())
    if p.returncode != 0:
        raise AssertionError(f"the Python case exited {p.returncode}:\n{p.stderr}")
    return json.load(open(summary)), p.stderr


def start_case(*args):
    """The case in the background (stderr piped)."""
    return subprocess.Popen(case_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env())


def cli(mon, *args, check=True):
    return gwtest.run([CLI, "--server", mon.address, "--json", "--timeout-ms", "20000", *args], check=check)


def exported_steps(mon, run_id):
    """Every stored step of the run, by step (gradwatch export --format jsonl)."""
    lines = cli(mon, "export", run_id, "--format", "jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    return [r for r in rows if r["type"] == "step"]
