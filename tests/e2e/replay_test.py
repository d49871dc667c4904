"""`gradwatch replay`: the case's Keras CSVLogger file, offline and into a running monitor.

The file is the case from DESIGN.md at epoch resolution (11 healthy epochs, the jump in
epoch 12, the loss pinned at 1.0000 from epoch 13 on): the detectors must call it a
collapse within a few epochs, where statistical warm-ups never finish. A broken file gets
an error naming its line and column.
"""
import json
import pathlib
import sys

import gwtest

DATA = pathlib.Path(__file__).parents[1] / "data"
CLI = gwtest.BIN / "gradwatch"


def events_of(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def main():
    out = gwtest.run([CLI, "--json", "replay", DATA / "case_keras.csv", "--offline", "--loss-bound", "1"]).stdout
    events = events_of(out)
    collapse = [e for e in events if e["kind"] in ("collapse", "val_collapse") and e["severity"] == "critical"]
    assert collapse, f"no critical collapse found in the case:\n{out}"
    assert min(e["step"] for e in collapse) <= 15, collapse  # epoch 12 (step 12) broke, 13+ pinned
    assert all(e["step"] >= 12 for e in events), f"events before the jump (healthy epochs):\n{out}"
    print(f"offline: {len(events)} events, first collapse at step {min(e['step'] for e in collapse)}")

    bad = gwtest.run([CLI, "replay", DATA / "bad_trace.csv", "--offline"], check=False)
    assert bad.returncode == 1, bad
    assert "bad_trace.csv:3" in bad.stderr and "abc" in bad.stderr, bad.stderr
    print("bad file: " + bad.stderr.strip())

    with gwtest.Monitor() as mon:
        online = gwtest.run([CLI, "--server", mon.address, "--json", "replay", DATA / "case_keras.csv",
                             "--run-id", "keras-case", "--loss-bound", "1"])
        stored = events_of(online.stdout)
        kinds = {e["kind"] for e in stored}
        assert kinds & {"collapse", "val_collapse"}, online
        run = json.loads(gwtest.run([CLI, "--server", mon.address, "--json", "run", "keras-case"]).stdout)
        assert run["steps"] == 20 and run["mode"] == "observe", run
    print(f"online: run keras-case stored 20 steps, events {sorted(kinds)}")


if __name__ == "__main__":
    sys.exit(main())
