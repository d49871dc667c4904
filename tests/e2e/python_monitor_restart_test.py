"""The monitor is killed (SIGKILL) twice in the middle of a Python run and restarted on the same
port. The session's reporter reconnects (same trainer_instance, resume point), resends what was
not acknowledged, and the store ends up holding each step exactly once; training itself is
unaffected (its loss curve equals an unmonitored run's).
"""
import json
import os
import signal
import sqlite3
import sys
import tempfile

import gwtest
import pycase

STEPS = 1000


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-pyrestart-")
    data = os.path.join(tmp, "data")
    summary = os.path.join(tmp, "monitored.json")
    mon = gwtest.Monitor(data_dir=data)
    port = mon.grpc_port
    args = ["--steps", STEPS, "--spike-step", "-2", "--eval-every", "100"]
    trainer = pycase.start_case("--monitor", mon.address, "--run-id", "py-restarts", "--mode", "observe",
                                "--summary-json", summary, *args)
    try:
        for kill_at in (250, 600):
            gwtest.wait_for_steps(mon.address, "py-restarts", kill_at, trainer, timeout=120)
            mon.proc.send_signal(signal.SIGKILL)
            mon.proc.wait()
            print(f"killed the monitor at >= {kill_at} stored steps")
            mon = gwtest.Monitor(data_dir=data, listen=f"127.0.0.1:{port}")
        _, stderr = trainer.communicate(timeout=300)
        assert trainer.returncode == 0, stderr
        assert "unreachable" in stderr, stderr  # it noticed, and carried on
        steps = [s["step"] for s in pycase.exported_steps(mon, "py-restarts")]
        assert steps == list(range(1, STEPS + 1)), (len(steps), steps[:5], steps[-5:])
        run = json.loads(pycase.cli(mon, "run", "py-restarts").stdout)
        assert run["state"] == "finished", run
    finally:
        if trainer.poll() is None:
            trainer.kill()
        mon.stop()

    db = sqlite3.connect(os.path.join(data, "gradwatch.db"))
    count, distinct, low, high = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step) FROM steps WHERE run_id='py-restarts'").fetchone()
    assert (count, distinct, low, high) == (STEPS, STEPS, 1, STEPS), (count, distinct, low, high)
    evals = db.execute("SELECT COUNT(*), COUNT(DISTINCT step) FROM evals WHERE run_id='py-restarts'").fetchone()
    assert evals == (STEPS // 100, STEPS // 100), evals
    print(f"store: {count} rows, {distinct} distinct steps, {low}..{high}; {evals[0]} evals")
    gwtest.report_faults("python_monitor_killed_twice", STEPS, db, "py-restarts")

    plain, _ = pycase.run_case(tmp, "plain", "--no-monitor", *args)
    assert json.load(open(summary))["loss_curve"] == plain["loss_curve"], "monitoring changed training"
    print("loss curve equals the unmonitored run's")


if __name__ == "__main__":
    sys.exit(main())
