"""The Python session's spool is the C++ reporter's format, both ways:

- a Python run with no monitor finishes, every report lands in its spool, and
  `build/bin/gradwatch replay SPOOL` (C++) delivers it into a monitor started afterwards: each
  step stored once, the evals and per-layer norms kept;
- a spool written by gradwatch-train (C++) reads back with gradwatch.spool, and writing the same
  messages with gradwatch.spool.Spool gives the same bytes.
"""
import json
import os
import socket
import sqlite3
import sys
import tempfile

import gwtest
import pycase
from gradwatch import spool

STEPS = 120


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-pyspool-")
    path = os.path.join(tmp, "py.spool")
    summary, stderr = pycase.run_case(tmp, "absent", "--monitor", closed_port(), "--run-id", "py-absent",
                                      "--steps", STEPS, "--spike-step", "-2", "--eval-every", "40", "--spool", path)
    assert summary["steps_run"] == STEPS, summary
    assert "reports are in the spool" in stderr and "gradwatch replay" in stderr, stderr
    with gwtest.Monitor() as mon:
        out = json.loads(pycase.cli(mon, "replay", path).stdout)
        assert out == {"run_id": "py-absent", "steps": STEPS, "messages": STEPS + 3}, out
        mon.stop()
        db = sqlite3.connect(os.path.join(mon.data_dir, "gradwatch.db"))
        count, distinct, low, high = db.execute("SELECT COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step) "
                                                "FROM steps WHERE run_id='py-absent'").fetchone()
        evals = db.execute("SELECT COUNT(*) FROM evals WHERE run_id='py-absent'").fetchone()[0]
        layers = db.execute("SELECT LENGTH(layer_grad_norms) FROM steps WHERE run_id='py-absent' LIMIT 1").fetchone()[0]
    assert (count, distinct, low, high) == (STEPS, STEPS, 1, STEPS), (count, distinct, low, high)
    assert evals == 3 and layers > 0, (evals, layers)
    print(f"Python spool replayed by gradwatch: {count} steps once each, {evals} evals, per-layer norms kept")

    cpp = os.path.join(tmp, "cpp.spool")
    gwtest.run([gwtest.BIN / "gradwatch-train", "--monitor", closed_port(), "--run-id", "cpp-absent", "--steps", "30",
                "--log-every", "0", "--eval-every", "10", "--spool", cpp])
    contents = spool.read(cpp)
    assert contents.error == "" and contents.skipped_bytes == 0, contents.error
    kinds = [m.WhichOneof("kind") for m in contents.messages]
    assert kinds[0] == "hello" and kinds.count("step") == 30 and kinds.count("eval") == 3, kinds
    copy = os.path.join(tmp, "copy.spool")
    s = spool.Spool(copy, 1 << 30, contents.messages[0].hello)
    for m in contents.messages[1:]:
        assert s.append(m)
    s.close()
    assert open(copy, "rb").read() == open(cpp, "rb").read(), "the Python spool's bytes differ from the C++ one's"
    print(f"C++ spool read by gradwatch.spool ({len(kinds)} records) and rewritten byte for byte")


if __name__ == "__main__":
    sys.exit(main())
