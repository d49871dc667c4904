"""The trainer is killed (SIGKILL) mid-run: the monitor marks the run failed within its
stall timeout, and every step the trainer had reported before is stored, once.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import gwtest

CLI = gwtest.BIN / "gradwatch"


def run_info(mon):
    p = subprocess.run([str(CLI), "--server", mon.address, "--json", "run", "killed"], capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 else None


def main():
    with gwtest.Monitor(extra_args=("--stall-timeout-ms", "3000")) as mon:
        trainer = subprocess.Popen(
            [str(gwtest.BIN / "gradwatch-train"), "--monitor", mon.address, "--run-id", "killed", "--mode", "observe",
             "--steps", "100000", "--log-every", "0", "--eval-every", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not ((r := run_info(mon)) and r["steps"] >= 300):
            assert time.monotonic() < deadline, "the run never reached 300 steps"
            time.sleep(0.05)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        killed_at = time.monotonic()
        while (r := run_info(mon))["state"] != "failed":
            assert time.monotonic() - killed_at < 15, f"not failed 15 s after the kill: {r}"
            time.sleep(0.1)
        print(f"run failed {time.monotonic() - killed_at:.1f} s after the kill (stall timeout 3 s)")
        mon.stop()
        db = sqlite3.connect(os.path.join(mon.data_dir, "gradwatch.db"))
        count, distinct, low, high = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step) FROM steps WHERE run_id='killed'").fetchone()
        # What the trainer sent before it died is unknown to us; stored = its steps 1..high.
        gwtest.report_faults("trainer_killed", high, db, "killed")
        assert count == distinct == high and low == 1, (count, distinct, low, high)
        assert high >= 300, high
        print(f"store: steps 1..{high}, each once")


if __name__ == "__main__":
    sys.exit(main())
