"""The case in Python (python/gradwatch/case), guarded by gradwatch.torch.Session against a real
gradwatchd: unguarded, the x1000 gradient at step 351 collapses it (loss pinned at 1, Jaccard ~0);
in guard mode the monitor names the explosion at step 351, switches clipping on (acknowledged at
a step), rolls back, and the run finishes healthy, its stream ended with a goodbye (finished); in
gated mode the monitor's verdict vetoes the update of step 351 itself.
"""
import json
import sys
import tempfile

import gwtest
import pycase


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-pycase-")
    alone, _ = pycase.run_case(tmp, "alone", "--no-monitor")
    print(f"unguarded: final loss {alone['final_train_loss']:.4f}, val hard Jaccard {alone['val_jaccard_hard']:.3g}, "
          f"{alone['seconds']:.1f} s")
    assert alone["collapsed"] is True, alone
    assert alone["steps_run"] == 600 and alone["commands_applied"] == [], alone

    with gwtest.Monitor() as mon:
        guarded, log = pycase.run_case(tmp, "guarded", "--monitor", mon.address, "--run-id", "py-guarded")
        applied = guarded["commands_applied"]
        print(f"guard mode: final loss {guarded['final_train_loss']:.4f}, val hard Jaccard "
              f"{guarded['val_jaccard_hard']:.3f}, {guarded['seconds']:.1f} s, commands "
              f"{[(c['action'], c['step']) for c in applied]}")
        assert guarded["collapsed"] is False and guarded["val_jaccard_hard"] > 0.5, (guarded, log)
        assert all(c["applied"] for c in applied), applied
        clip = next(c for c in applied if c["action"] == "set_clipping")
        assert 351 < clip["step"] <= 356, clip  # from the next step on, in guard (async) mode

        events = [json.loads(line) for line in pycase.cli(mon, "events", "py-guarded").stdout.splitlines()]
        spikes = [e for e in events if e["kind"] == "grad_spike" and e["severity"] == "critical"]
        assert spikes and spikes[0]["step"] == 351, events
        audit = [json.loads(line) for line in pycase.cli(mon, "commands", "py-guarded").stdout.splitlines()]
        by_id = {a["command_id"]: a for a in audit}
        assert by_id[clip["id"]]["action"] == "set_clipping" and by_id[clip["id"]]["acknowledged"], by_id
        assert by_id[clip["id"]]["applied_at_step"] == clip["step"], by_id[clip["id"]]
        run = json.loads(pycase.cli(mon, "run", "py-guarded").stdout)
        assert run["steps"] == 600 and run["state"] == "finished", run
        explain = pycase.cli(mon, "explain", "py-guarded").stdout
        assert "gradient explosion" in explain and "step 351" in explain, explain
        steps = pycase.exported_steps(mon, "py-guarded")
        assert steps[clip["step"] - 1]["clip_kind"] == "KIND_NORM" and steps[clip["step"] - 2]["clip_kind"] == "KIND_OFF"
    print(f"explosion at step 351 found, clipping acknowledged at step {clip['step']}, run finished healthy")

    # Gated: each update waits for the monitor's verdict (through the reporter's helper process),
    # so the x1000 gradient of step 351 is vetoed before it lands, not a step later.
    with gwtest.Monitor() as mon:
        gated, log = pycase.run_case(tmp, "gated", "--monitor", mon.address, "--run-id", "py-gated",
                                     "--mode", "gated")
        print(f"gated mode: final loss {gated['final_train_loss']:.4f}, val hard Jaccard "
              f"{gated['val_jaccard_hard']:.3f}, {gated['updates_vetoed']} update(s) vetoed, {gated['seconds']:.1f} s")
        assert gated["collapsed"] is False and gated["val_jaccard_hard"] > 0.5, (gated, log)
        assert gated["updates_vetoed"] >= 1 and "step 351: veto" in log, log
        run = json.loads(pycase.cli(mon, "run", "py-gated").stdout)
        assert run["steps"] == 600 and run["state"] == "finished", run


if __name__ == "__main__":
    sys.exit(main())
