"""The Slurm launcher against a real single-node Slurm (slurm_cluster.py: munged, slurmctld and
slurmd in a temporary folder on free ports), through the `gradwatch` client and a gradwatchd
with --launcher slurm and reporter tokens:
- the case's scenario (seed, guard mode) launched through sbatch finishes healthy, and
  `gradwatch run` and `gradwatch jobs` show the Slurm job id;
- a job of 2 ranks (tasks_per_node 2) is one run of 2 ranks with equal parameters at the end;
- a long job is stopped with `gradwatch stop` (scancel --signal=TERM) within the grace (10 s);
- a job whose trainer fails ends failed with Slurm's reason; one sbatch refuses (a GPU on a
  node without any) ends failed with sbatch's words;
- the monitor SIGKILLed while a Slurm job runs, restarted, adopts it by its Slurm job id and
  stores every step once.
Skips (exit 77) where Slurm or munge is not installed or this is not root.
"""
import json
import os
import signal
import sqlite3
import sys
import time

import gwtest
import slurm_cluster
import jobs_test
from jobs_test import cli, show, wait_for

TINY = ["--set", 'model={"depth": 2, "base": 4}', "--set", 'data={"images": 16, "size": 16}', "--set", "eval_every=0"]


def ended(mon, run_id):
    job = show(mon, run_id)["job"]
    return job if job["state"] not in ("queued", "running") else None


def stop_within_grace(mon):
    """The local launcher's stop test, here through scancel --signal=TERM."""
    jobs_test.stop_within_grace(mon)
    job = show(mon, "long-job")["job"]
    assert job["launcher"] == "slurm" and job["scheduler_job_id"], job


def failures(mon):
    p = cli(mon, "launch", "--run-id", "slurm-bad-data", "--set", "data.dir=broken", "--set", "steps=10", check=False)
    assert p.returncode == 1, (p.returncode, p.stderr)
    job = show(mon, "slurm-bad-data")["job"]
    assert job["state"] == "failed" and job["exit_code"] == 1, job
    assert "gradwatch-train:" in job["error"] and "Slurm: FAILED (NonZeroExitCode)" in job["error"], job
    assert job["scheduler_state"] == "FAILED (NonZeroExitCode)", job
    print(f"failing trainer: {job['error']}")

    p = cli(mon, "launch", "--run-id", "slurm-no-gpu", "--set", 'resources={"gpus_per_task": 1}', check=False)
    assert p.returncode == 1, (p.returncode, p.stderr)
    job = show(mon, "slurm-no-gpu")["job"]
    assert job["state"] == "failed" and "Slurm refused the job" in job["error"], job
    print(f"refused by sbatch: {job['error']}")


def seed_finishes_healthy(mon, data):
    steps = 600  # the case as it is: the spike comes at step 350
    started = time.monotonic()
    p = cli(mon, "launch", "--run-id", "slurm-seed", "--set", "scenario=seed", "--set", f"steps={steps}",
            "--set", "mode=guard", "--set", "log_every=100", timeout=400)
    took = time.monotonic() - started
    assert p.stdout.strip() == "slurm-seed", p.stdout
    assert "job slurm-seed succeeded (exit code 0)" in p.stderr, p.stderr
    assert "(slurm job " in p.stderr, p.stderr  # the follow shows the Slurm job as it goes
    run = show(mon, "slurm-seed")
    job = run["job"]
    assert job["launcher"] == "slurm" and job["scheduler_job_id"].isdigit(), job
    assert job["scheduler_state"] == "COMPLETED", job
    assert run["steps"] == steps, run
    summary = json.load(open(os.path.join(data, "jobs", "slurm-seed", "summary.json")))
    actions = [c["action"] for c in summary["commands_applied"]]
    assert summary["collapsed"] is False and summary["val_jaccard_hard"] > 0.5, summary
    assert "set_clipping" in actions, summary
    text = cli(mon, "run", "slurm-seed").stdout
    assert f"launcher   slurm job {job['scheduler_job_id']}" in text, text
    assert "scheduler  COMPLETED" in text, text
    table = cli(mon, "jobs").stdout
    assert f"slurm job {job['scheduler_job_id']}" in table, table
    print(f"seed in guard mode through Slurm job {job['scheduler_job_id']}: succeeded in {took:.1f} s, "
          f"{run['steps']} steps, not collapsed, commands {actions}, val hard Jaccard {summary['val_jaccard_hard']:.3f}")


def survives_restart(mon, data, env_args):
    steps = 1500
    cli(mon, "launch", "--detach", "--run-id", "slurm-restart", "--set", f"steps={steps}", "--set", "log_every=500",
        *TINY)
    wait_for("slurm-restart streaming", lambda: show(mon, "slurm-restart").get("steps", 0) > 100)
    before = show(mon, "slurm-restart")["job"]
    port = mon.grpc_port
    mon.proc.send_signal(signal.SIGKILL)
    mon.proc.wait()
    killed_at = time.monotonic()
    mon = gwtest.Monitor(data_dir=data, listen=f"127.0.0.1:{port}", extra_args=env_args)
    after = show(mon, "slurm-restart")["job"]
    for field in ("job_id", "scheduler_job_id", "created_unix_millis", "started_unix_millis"):
        assert after[field] == before[field], (field, before, after)
    assert after["state"] in ("running", "succeeded"), after
    print(f"restart: Slurm job {after['scheduler_job_id']} adopted ({after['state']}, "
          f"{time.monotonic() - killed_at:.1f} s after the SIGKILL)")
    job = wait_for("slurm-restart ending", lambda: ended(mon, "slurm-restart"), timeout=240)
    assert job["state"] == "succeeded", job
    wait_for("every step stored", lambda: (lambda r: r if r["steps"] == steps else None)(
        show(mon, "slurm-restart")), timeout=60)
    db = sqlite3.connect(os.path.join(data, "gradwatch.db"))
    rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT step) FROM steps WHERE run_id=?",
                                ("slurm-restart",)).fetchone()
    assert rows == distinct == steps, (rows, distinct, steps)
    print(f"restart: the adopted job succeeded; {distinct} of {steps} steps stored, {rows - distinct} twice")
    return mon


def two_ranks(mon, data):
    """srun starts the 2 tasks, each a rank from Slurm's environment (SLURM_PROCID, the
    rendezvous on the first node)."""
    run, checksum = jobs_test.launch_two_ranks(mon, data, "slurm-ranks", TINY)
    print(f"2 ranks through Slurm job {run['job']['scheduler_job_id']}: parameter checksums equal ({checksum})")


def main():
    why = slurm_cluster.available()
    if why:
        print(f"SKIP: no test Slurm: {why}")
        return 77
    began = time.monotonic()
    _, tokens, datasets, data = jobs_test.prepare("gradwatch-slurm-e2e-")
    with slurm_cluster.SlurmCluster() as cluster:
        os.environ.update(cluster.env)  # gradwatchd passes SLURM_CONF on to sbatch, scontrol, scancel
        print(f"test Slurm up in {time.monotonic() - began:.1f} s ({cluster.conf})")
        args = ("--launcher", "slurm", "--tokens", tokens, "--datasets-dir", datasets)
        mon = gwtest.Monitor(data_dir=data, extra_args=args)
        try:
            stop_within_grace(mon)
            failures(mon)
            seed_finishes_healthy(mon, data)
            two_ranks(mon, data)
            mon = survives_restart(mon, data, args)
            states = {json.loads(j)["job_id"]: json.loads(j)["state"] for j in cli(mon, "--json", "jobs").stdout.splitlines()}
            assert states == {"long-job": "stopped", "slurm-bad-data": "failed", "slurm-no-gpu": "failed",
                              "slurm-seed": "succeeded", "slurm-ranks": "succeeded", "slurm-restart": "succeeded"}, states
        except BaseException:
            print("--- gradwatchd output ---\n" + mon.output())
            print(cluster.logs())
            raise
        finally:
            mon.stop()
    print(f"slurm e2e: {time.monotonic() - began:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
