"""A one-step learning-rate spike vetoed before it lands, with the real binaries (issue 17).

gradwatch-train with the learning rate x100 (and x10) for the step at 0-based 351 (reported step
352). Unmonitored, x100 collapses the run (Jaccard loss pinned at 1). In gated mode the trainer
reports the step, with the rate and the update size it proposes, before optimizer.step(); the
monitor sees the jump and the verdict runs that update at the rate's level: no collapse, no
rollback, and explain says why the update was not applied as proposed.
"""
import json
import os
import sys
import tempfile

import gwtest

TRAIN = gwtest.BIN / "gradwatch-train"
CLI = gwtest.BIN / "gradwatch"


def train(tmp, name, config, *args):
    path = os.path.join(tmp, name + ".config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    summary = os.path.join(tmp, name + ".json")
    p = gwtest.run([TRAIN, "--config", path, "--log-every", "0", "--summary-json", summary, *args], timeout=600)
    return json.load(open(summary)), p.stderr


def spike(factor):
    return {"faults": [{"kind": "lr_spike", "step": 351, "factor": factor}], "gate_timeout_ms": 5000}


def check_gated(mon, tmp, factor):
    run_id = f"lr-x{factor}"
    summary, log = train(tmp, run_id, spike(factor), "--monitor", mon.address, "--mode", "gated", "--run-id", run_id)
    found = [json.loads(line) for line in
             gwtest.run([CLI, "--server", mon.address, "--json", "events", run_id]).stdout.splitlines()]
    print(f"gated x{factor}: val hard Jaccard {summary['val_jaccard_hard']:.4f}, vetoed {summary['updates_vetoed']}, "
          f"gate timeouts {summary['gate_timeouts']}, events {[(e['step'], e['kind'], e['severity']) for e in found]}")
    jumps = [e for e in found if e["kind"] == "lr_jump"]
    assert jumps and jumps[0]["step"] == 352 and jumps[0]["severity"] == "critical", found
    assert "gated mode: learning rate" in jumps[0]["message"] and "update applied at 0.01 instead" in jumps[0]["message"], jumps
    assert not [e for e in found if e["kind"] in ("collapse", "val_collapse")], found
    assert summary["collapsed"] is False and summary["val_jaccard_hard"] > 0.95, log[-2000:]
    # Gate timeouts before the stream is up (the first steps) fail open; step 352's verdict came.
    assert summary["updates_vetoed"] >= 1, summary["updates_vetoed"]
    assert "step 352: veto: learning rate" in log, log[-2000:]
    assert not [c for c in summary["commands_applied"] if c["action"] == "rollback"], summary["commands_applied"]
    text = gwtest.run([CLI, "--server", mon.address, "explain", run_id]).stdout
    print(text)
    assert "learning-rate jump" in text and "update applied at 0.01 instead (gated veto)" in text, text


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-lrveto-")
    alone, _ = train(tmp, "alone", {**spike(100), "no_monitor": True})
    print(f"x100 unmonitored: final loss {alone['final_train_loss']:.4f}, collapsed {alone['collapsed']}")
    assert alone["collapsed"] is True, alone
    with gwtest.Monitor() as mon:
        for factor in (100, 10):
            check_gated(mon, tmp, factor)


if __name__ == "__main__":
    sys.exit(main())
