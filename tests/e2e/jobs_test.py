"""Launched jobs end to end, through the `gradwatch` client against a gradwatchd that
requires tokens: launch -> succeeded with logs and exit code (the job streams with the
reporter token the monitor gave it); a config the trainer fails on -> failed, with the
trainer's error in `gradwatch run`; stop -> stopped within the grace period; the monitor
killed (SIGKILL) and restarted while a job runs -> the job's record is intact and it is
followed to its end.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import gwtest

OPERATOR = "operator-token-0123456789"
TINY = {"model": {"depth": 2, "base": 4}, "data": {"images": 16, "size": 16}, "log_every": 10,
        "eval_every": 10}


def cli(mon, *args, check=True, timeout=300):
    return gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "--token", OPERATOR, *args],
                      check=check, timeout=timeout)


def show(mon, run_id):
    return json.loads(cli(mon, "--json", "run", run_id).stdout)


wait_for = gwtest.wait_until


def launch_succeeds(mon, tmp):
    config = os.path.join(tmp, "tiny.json")
    json.dump({**TINY, "steps": 40}, open(config, "w"))
    p = cli(mon, "launch", config, "--run-id", "ok-job")
    assert p.stdout.strip() == "ok-job", p.stdout
    assert "job ok-job succeeded (exit code 0)" in p.stderr, p.stderr
    run = show(mon, "ok-job")
    assert run["job"]["state"] == "succeeded" and run["job"]["exit_code"] == 0, run
    assert run["steps"] == 40, run  # streamed with the job's own reporter token
    text = cli(mon, "run", "ok-job").stdout
    for line in ("state      finished", "mode       guard", "policy     defaults", "steps      40 (last 40 of 40)",
                 "incidents  0", "job        succeeded (exit code 0)"):
        assert line in text, (line, text)
    logs = cli(mon, "logs", "ok-job").stdout
    assert "gradwatch-train: done: 40 steps" in logs, logs
    print(f"launch: succeeded, exit code 0, 40 steps stored, {len(logs)} bytes of log")


def launch_two_ranks(mon, data, run_id, model_args):
    """A job of 2 ranks (resources.tasks_per_node 2) is one run of 2 ranks whose parameters
    are equal at the end; returns the run and the checksum."""
    steps = 60
    p = cli(mon, "launch", "--run-id", run_id, "--set", f"steps={steps}", "--set", "log_every=0",
            "--set", 'resources={"nodes": 1, "tasks_per_node": 2}', *model_args, timeout=300)
    assert f"job {run_id} succeeded (exit code 0)" in p.stderr, p.stderr
    run = show(mon, run_id)
    assert run.get("world_size") == 2, run
    last = {k["rank"]: k["last_step"] for k in run["ranks"]}
    assert sorted(last) == [0, 1] and len(set(last.values())) == 1 and last[0] >= steps - 1, run["ranks"]
    folder = os.path.join(data, "jobs", run_id)
    sums = [json.load(open(os.path.join(folder, name)))["parameter_checksum"]["fnv1a64"]
            for name in ("summary.json", "summary-rank1.json")]
    assert sums[0] == sums[1], sums
    return run, sums[0]


def launch_fails(mon):
    p = cli(mon, "launch", "--run-id", "bad-data", "--set", "data.dir=broken", "--set", "steps=10", check=False)
    assert p.returncode == 1, (p.returncode, p.stderr)
    text = cli(mon, "run", "bad-data").stdout
    assert "job        failed (exit code 1)" in text, text
    error = next(line for line in text.splitlines() if line.startswith("error"))
    assert "gradwatch-train:" in error and ".npy" in error, text
    print(f"failing config: {error}")


def stop_within_grace(mon):
    cli(mon, "launch", "--detach", "--run-id", "long-job", "--set", "steps=10000000", "--set", "log_every=0")
    wait_for("long-job streaming", lambda: show(mon, "long-job").get("steps", 0) > 10)
    grace_s = 10
    started = time.monotonic()
    p = cli(mon, "stop", "long-job", "--grace-ms", str(grace_s * 1000))
    took = time.monotonic() - started
    assert "job long-job stopped (exit code 143)" in p.stdout, p.stdout
    assert took < grace_s, f"stopping took {took:.1f} s, the grace period is {grace_s} s"
    assert "stopping on signal 15" in cli(mon, "logs", "long-job").stdout
    # The run, too, says stopped: the trainer's goodbye says it ended on request.
    wait_for("the run stopped", lambda: show(mon, "long-job")["state"] == "stopped", 30)
    print(f"stop: stopped in {took:.2f} s (grace {grace_s} s), exit code 143, SIGTERM handled by the trainer, "
          f"run stopped")


def survives_restart(mon, data, tokens):
    steps = 2500
    cli(mon, "launch", "--detach", "--run-id", "restart-job", "--set", f"steps={steps}", "--set", "log_every=500",
        "--set", "eval_every=0")
    wait_for("restart-job streaming", lambda: show(mon, "restart-job").get("steps", 0) > 100)
    before = show(mon, "restart-job")["job"]
    port = mon.grpc_port
    mon.proc.send_signal(signal.SIGKILL)
    mon.proc.wait()
    mon = gwtest.Monitor(data_dir=data, listen=f"127.0.0.1:{port}", extra_args=("--tokens", tokens))
    after = show(mon, "restart-job")["job"]
    for field in ("job_id", "run_id", "created_unix_millis", "started_unix_millis"):
        assert after[field] == before[field], (field, before, after)
    assert after["state"] in ("running", "succeeded"), after
    print(f"restart: the job was {after['state']} after the restart (pid {after['pid']}), record intact")
    ended = wait_for("restart-job ending", lambda: (lambda j: j if j["state"] != "running" else None)(
        show(mon, "restart-job")["job"]), timeout=180)
    assert ended["state"] == "succeeded", ended
    stored = wait_for("every step stored", lambda: (lambda r: r if r["steps"] == steps else None)(
        show(mon, "restart-job")), timeout=60)
    print(f"restart: the adopted job succeeded; {stored['steps']} of {steps} steps stored")
    return mon


def prepare(prefix):
    """A temporary folder with the operator's tokens file, a datasets folder holding one broken
    set ("broken": a .npy file that is not one), and the monitor's data folder's path."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    tokens = os.path.join(tmp, "tokens.json")
    json.dump({"tokens": [{"token": OPERATOR, "role": "operator"}]}, open(tokens, "w"))
    datasets = os.path.join(tmp, "datasets")
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(datasets, "broken", sub))
        open(os.path.join(datasets, "broken", sub, "0.npy"), "wb").write(b"not a numpy file")
    return tmp, tokens, datasets, os.path.join(tmp, "data")


def main():
    tmp, tokens, datasets, data = prepare("gradwatch-jobs-")
    mon = gwtest.Monitor(data_dir=data, extra_args=("--tokens", tokens, "--datasets-dir", datasets))
    try:
        launch_succeeds(mon, tmp)
        tiny_args = ["--set", "model=" + json.dumps(TINY["model"]), "--set", "data=" + json.dumps(TINY["data"])]
        _, checksum = launch_two_ranks(mon, data, "ranks-job", tiny_args)
        print(f"launch: 2 ranks on this host (gradwatch-train --nproc 2), parameter checksums equal ({checksum})")
        launch_fails(mon)
        stop_within_grace(mon)
        mon.stop()
        mon = gwtest.Monitor(data_dir=data, extra_args=("--tokens", tokens))
        mon = survives_restart(mon, data, tokens)
        jobs = cli(mon, "--json", "jobs").stdout.splitlines()
        states = {json.loads(j)["job_id"]: json.loads(j)["state"] for j in jobs}
        assert states == {"ok-job": "succeeded", "ranks-job": "succeeded", "bad-data": "failed",
                          "long-job": "stopped", "restart-job": "succeeded"}, states
        print(f"every job kept across restarts: {states}")
    except BaseException:
        print("--- gradwatchd output ---\n" + mon.output())
        raise
    finally:
        mon.stop()


if __name__ == "__main__":
    sys.exit(main())
