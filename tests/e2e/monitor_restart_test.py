"""The monitor is killed (SIGKILL) twice in the middle of a 2,000-step run and restarted on
the same port. The trainer reconnects, resends what was not acknowledged, and the store
ends up holding each of the 2,000 steps exactly once; the training itself is unaffected
(its loss curve equals an unmonitored run's).
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile

import gwtest

STEPS = 2000


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-restart-")
    data = os.path.join(tmp, "data")
    summary = os.path.join(tmp, "monitored.json")
    mon = gwtest.Monitor(data_dir=data)
    port = mon.grpc_port
    trainer = subprocess.Popen(
        [str(gwtest.BIN / "gradwatch-train"), "--monitor", mon.address, "--run-id", "restarts", "--mode",
         "observe", "--steps", str(STEPS), "--log-every", "0", "--eval-every", "0", "--summary-json", summary],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for kill_at in (400, 1100):
            gwtest.wait_for_steps(mon.address, "restarts", kill_at)
            mon.proc.send_signal(signal.SIGKILL)
            mon.proc.wait()
            print(f"killed the monitor at >= {kill_at} stored steps")
            mon = gwtest.Monitor(data_dir=data, listen=f"127.0.0.1:{port}")
        _, stderr = trainer.communicate(timeout=300)
        assert trainer.returncode == 0, stderr
    finally:
        if trainer.poll() is None:
            trainer.kill()
        mon.stop()

    db = sqlite3.connect(os.path.join(data, "gradwatch.db"))
    count, distinct, low, high = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step) FROM steps WHERE run_id='restarts'").fetchone()
    assert (count, distinct, low, high) == (STEPS, STEPS, 1, STEPS), (count, distinct, low, high)
    print(f"store: {count} rows, {distinct} distinct steps, {low}..{high}")
    gwtest.report_faults("monitor_killed_twice", STEPS, db, "restarts")

    plain = os.path.join(tmp, "plain.json")
    gwtest.run([gwtest.BIN / "gradwatch-train", "--no-monitor", "--steps", str(STEPS), "--log-every", "0",
                "--eval-every", "0", "--summary-json", plain])
    assert json.load(open(summary))["loss_curve"] == json.load(open(plain))["loss_curve"], "monitoring changed training"
    print("loss curve equals the unmonitored run's")


if __name__ == "__main__":
    sys.exit(main())
