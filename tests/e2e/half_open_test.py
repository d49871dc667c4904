"""A half-open connection: the monitor is frozen (SIGSTOP), so its socket stays open but
nothing answers. The trainer's keepalive finds it within 20 s and training goes on; once
the monitor thaws (SIGCONT) the stream recovers and every step is stored once.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import gwtest

CLI = gwtest.BIN / "gradwatch"


def main():
    with gwtest.Monitor() as mon:
        trainer = subprocess.Popen(
            [str(gwtest.BIN / "gradwatch-train"), "--monitor", mon.address, "--run-id", "frozen", "--mode", "observe",
             "--steps", "100000", "--log-every", "0", "--eval-every", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines = []
        threading.Thread(target=lambda: [lines.append((time.monotonic(), l)) for l in trainer.stderr],
                         daemon=True).start()
        try:
            deadline = time.monotonic() + 60
            while True:
                p = subprocess.run([str(CLI), "--server", mon.address, "--json", "run", "frozen"],
                                   capture_output=True, text=True)
                if p.returncode == 0 and json.loads(p.stdout)["steps"] >= 200:
                    break
                assert time.monotonic() < deadline, "the run never reached 200 steps"
                time.sleep(0.05)
            mon.proc.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            while not any("unreachable" in l for _, l in lines):
                assert time.monotonic() - frozen_at < 30, "the trainer did not notice the frozen monitor in 30 s"
                time.sleep(0.2)
            found = next(t for t, l in lines if "unreachable" in l) - frozen_at
            print(f"half-open connection found {found:.1f} s after the monitor froze")
            assert found <= 20, found
            mon.proc.send_signal(signal.SIGCONT)
            while not any("connected to the monitor" in l for _, l in lines):
                assert time.monotonic() - frozen_at < 60, "the stream did not recover"
                time.sleep(0.2)
            stop = subprocess.run([str(CLI), "--server", mon.address, "--json", "--timeout-ms", "30000", "stop",
                                   "frozen"], capture_output=True, text=True)
            assert stop.returncode == 0, stop.stderr
            assert trainer.wait(timeout=60) == 0
            last = json.loads(stop.stdout)["applied_at_step"] - 1
        finally:
            if trainer.poll() is None:
                trainer.kill()
        mon.stop()
        db = sqlite3.connect(os.path.join(mon.data_dir, "gradwatch.db"))
        count, distinct, high = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT step), MAX(step) FROM steps WHERE run_id='frozen'").fetchone()
        gwtest.report_faults("half_open_connection", last, db, "frozen")
        assert count == distinct == high == last, (count, distinct, high, last)
        print(f"recovered; store holds steps 1..{high}, each once")


if __name__ == "__main__":
    sys.exit(main())
