"""An explosion inside the detectors' warm-up, with the real binaries (issue 17).

gradwatch-train with the gradient x1000 at 0-based step 20 (reported step 21, the 21st update):
- unmonitored, the run is dead from there on (validation hard Jaccard ~0.28, a healthy run ~0.99);
- in observe mode gradwatch pages at once (critical grad_spike at step 21, 20 norms seen) and names
  the dead network that follows as one incident with its cause, within ten steps; explain does not
  call it recovered;
- in guard mode the policy rolls back to before the explosion (the checkpoint of step 0), and the
  run ends healthy: validation hard Jaccard within 0.02 of the unfaulted run.
"""
import json
import os
import sys
import tempfile

import gwtest

TRAIN = gwtest.BIN / "gradwatch-train"
CLI = gwtest.BIN / "gradwatch"
FAULT = [{"kind": "grad_spike", "step": 20, "factor": 1000}]


def train(tmp, name, config, *args):
    path = os.path.join(tmp, name + ".config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    summary = os.path.join(tmp, name + ".json")
    p = gwtest.run([TRAIN, "--config", path, "--log-every", "0", "--summary-json", summary, *args], timeout=600)
    return json.load(open(summary)), p.stderr


def events(mon, run_id):
    out = gwtest.run([CLI, "--server", mon.address, "--json", "events", run_id]).stdout
    return [json.loads(line) for line in out.splitlines()]


def explain(mon, run_id):
    return gwtest.run([CLI, "--server", mon.address, "explain", run_id]).stdout


def check_observed(mon):
    found = events(mon, "early-observe")
    kinds = [(e["step"], e["kind"], e["severity"]) for e in found]
    print("observe mode events:", kinds)
    first = found[0]
    assert (first["step"], first["kind"], first["severity"]) == (21, "grad_spike", "critical"), found
    dead = [e for e in found if e["kind"] == "vanishing" and "since the gradient explosion at step 21" in e["message"]]
    assert dead and dead[0]["step"] <= 31, found
    assert dead[0].get("incident") == first.get("incident"), found
    text = explain(mon, "early-observe")
    assert "not recovered (the gradient is gone)" in text, text


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-early-")
    plain, _ = train(tmp, "plain", {"no_monitor": True})
    alone, _ = train(tmp, "alone", {"no_monitor": True, "faults": FAULT})
    print(f"unfaulted: val hard Jaccard {plain['val_jaccard_hard']:.4f}; x1000 at step 21 unmonitored: "
          f"{alone['val_jaccard_hard']:.4f}, final loss {alone['final_train_loss']:.3f}")
    assert alone["val_jaccard_hard"] < plain["val_jaccard_hard"] - 0.2, alone

    with gwtest.Monitor() as mon:
        train(tmp, "observe", {"faults": FAULT}, "--monitor", mon.address, "--mode", "observe",
              "--run-id", "early-observe")
        check_observed(mon)
        guarded, log = train(tmp, "guard", {"faults": FAULT}, "--monitor", mon.address, "--run-id", "early-guard")
        commands = [(c["step"], c["action"], c["detail"]) for c in guarded["commands_applied"]]
        print(f"guard mode: val hard Jaccard {guarded['val_jaccard_hard']:.4f} (unfaulted "
              f"{plain['val_jaccard_hard']:.4f}), commands {commands}")
        rollbacks = [c for c in guarded["commands_applied"] if c["action"] == "rollback"]
        assert rollbacks and rollbacks[0]["detail"] == "restored the checkpoint of step 0", (commands, log)
        assert rollbacks[0]["step"] <= 35, commands
        assert abs(guarded["val_jaccard_hard"] - plain["val_jaccard_hard"]) <= 0.02, (guarded, log)
        text = explain(mon, "early-guard")
        print(text)
        assert "gradient explosion" in text and "restored the checkpoint of step 0" in text, text


if __name__ == "__main__":
    sys.exit(main())
