"""The monitor is absent for the whole run: training finishes anyway, every report lands
in the trainer's spool, and `gradwatch replay SPOOL` into a monitor started afterwards
fills the store completely, each step once.
"""
import json
import os
import socket
import sqlite3
import sys
import tempfile

import gwtest

STEPS = 400


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-absent-")
    spool = os.path.join(tmp, "run.spool")
    summary = os.path.join(tmp, "summary.json")
    p = gwtest.run([gwtest.BIN / "gradwatch-train", "--monitor", f"127.0.0.1:{closed_port()}", "--run-id", "absent",
                    "--steps", str(STEPS), "--log-every", "0", "--eval-every", "100", "--spool", spool,
                    "--summary-json", summary])
    assert json.load(open(summary))["steps_run"] == STEPS
    assert "reports are in the spool" in p.stderr, p.stderr
    print(p.stderr.strip().splitlines()[-2])
    with gwtest.Monitor() as mon:
        out = json.loads(gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "--json", "replay",
                                     spool]).stdout)
        assert out == {"run_id": "absent", "steps": STEPS, "messages": STEPS + 4}, out
        mon.stop()
        db = sqlite3.connect(os.path.join(mon.data_dir, "gradwatch.db"))
        count, distinct, low, high = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step) FROM steps WHERE run_id='absent'").fetchone()
        evals = db.execute("SELECT COUNT(*) FROM evals WHERE run_id='absent'").fetchone()[0]
        layers = db.execute("SELECT LENGTH(layer_grad_norms) FROM steps WHERE run_id='absent' LIMIT 1").fetchone()[0]
        gwtest.report_faults("monitor_absent_then_spool_replayed", STEPS, db, "absent")
    assert (count, distinct, low, high) == (STEPS, STEPS, 1, STEPS), (count, distinct, low, high)
    assert evals == 4 and layers > 0, (evals, layers)
    print(f"store after replay of the spool: {count} steps, {distinct} distinct, {evals} evals, per-layer norms kept")


if __name__ == "__main__":
    sys.exit(main())
