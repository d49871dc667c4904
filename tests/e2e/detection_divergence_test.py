"""Divergence within tens of steps, and never on a converged run, with the real binaries (issue 17).

- A slow divergence: from 0-based step 300 (reported 301) the gradient is reversed and scaled by
  0.1 (fault grad_ascent): after ~20 steps of momentum the loss creeps up 1-2.5% a step. gradwatch
  flags a divergence within 40 steps of the fault.
- A 5,000-step healthy run (seed 7, LR 0.01) converges to a loss of ~1e-3 and below, where a
  relative rule fires on noise: no critical event after it converged (nor before).
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
    p = gwtest.run([TRAIN, "--config", path, "--log-every", "0", "--summary-json", summary, *args], timeout=900)
    return json.load(open(summary)), p.stderr


def events(mon, run_id):
    out = gwtest.run([CLI, "--server", mon.address, "--json", "events", run_id]).stdout
    return [json.loads(line) for line in out.splitlines()]


def converged_at(losses, level=0.05, window=20):
    """The first 1-based step whose last `window` losses average below `level`."""
    for i in range(window, len(losses) + 1):
        if sum(losses[i - window:i]) / window < level:
            return i
    return None


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-divergence-")
    with gwtest.Monitor() as mon:
        ascent = {"steps": 400, "eval_every": 0, "faults": [{"kind": "grad_ascent", "step": 300, "factor": 0.1}]}
        summary, _ = train(tmp, "ascent", ascent, "--monitor", mon.address, "--mode", "observe", "--run-id", "ascent")
        losses = summary["loss_curve"]
        found = [e for e in events(mon, "ascent") if e["kind"] == "divergence"]
        print(f"slow divergence: loss {losses[299]:.3f} at step 300, {losses[339]:.3f} at 340, {losses[-1]:.3f} at 400; "
              f"divergence events {[(e['step'], e['severity'], e['message']) for e in found]}")
        assert found and 301 <= found[0]["step"] < 301 + 40, found

        healthy, _ = train(tmp, "long", {"steps": 5000, "eval_every": 500}, "--monitor", mon.address,
                           "--mode", "observe", "--run-id", "long")
        at = converged_at(healthy["loss_curve"])
        all_events = events(mon, "long")
        critical = [e for e in all_events if e["severity"] == "critical"]
        print(f"5,000-step healthy run: converged (20-step mean loss < 0.05) at step {at}, final loss "
              f"{healthy['final_train_loss']:.2g}, {len(all_events)} events, {len(critical)} critical: "
              f"{[(e['step'], e['kind'], e['severity']) for e in all_events]}")
        assert at is not None and healthy["final_train_loss"] < 0.01, healthy["final_train_loss"]
        assert not critical, critical


if __name__ == "__main__":
    sys.exit(main())
