"""The case, reproduced and prevented, with the real binaries.

- `--scenario seed --no-monitor` collapses the way the case did (loss pinned at 1, Jaccard ~0);
- the same with `--clip-norm 1.0` from the start does not;
- the same with gradwatchd in the default guard mode does not, because the monitor acted live;
- the same seed gives the identical loss curve, and observe mode leaves the curve untouched.
"""
import json
import os
import sys
import tempfile

import gwtest

TRAIN = gwtest.BIN / "gradwatch-train"


def train(tmp, name, *args):
    summary = os.path.join(tmp, name + ".json")
    p = gwtest.run([TRAIN, "--log-every", "0", "--summary-json", summary, *args], timeout=600)
    return json.load(open(summary)), p.stderr


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-scenario-")

    alone, _ = train(tmp, "alone", "--scenario", "seed", "--no-monitor")
    print(f"unmonitored: final loss {alone['final_train_loss']:.4f}, val hard Jaccard "
          f"{alone['val_jaccard_hard']:.3g}, {alone['seconds']:.1f} s")
    assert alone["collapsed"] is True, alone
    assert alone["final_train_loss"] >= 0.99 and alone["val_jaccard_hard"] <= 0.01, alone
    assert alone["steps_run"] == 600 and alone["commands_applied"] == []

    clipped, _ = train(tmp, "clipped", "--scenario", "seed", "--no-monitor", "--clip-norm", "1.0")
    print(f"clip-norm 1.0: final loss {clipped['final_train_loss']:.4f}, val hard Jaccard "
          f"{clipped['val_jaccard_hard']:.3f}")
    assert clipped["collapsed"] is False and clipped["val_jaccard_hard"] > 0.5, clipped

    with gwtest.Monitor() as mon:
        guarded, log = train(tmp, "guarded", "--scenario", "seed", "--monitor", mon.address,
                             "--run-id", "guarded")
        actions = [c["action"] for c in guarded["commands_applied"]]
        print(f"guard mode: final loss {guarded['final_train_loss']:.4f}, val hard Jaccard "
              f"{guarded['val_jaccard_hard']:.3f}, commands {actions}")
        assert guarded["collapsed"] is False and guarded["val_jaccard_hard"] > 0.5, (guarded, log)
        assert "set_clipping" in actions, guarded["commands_applied"]
        assert all(c["applied"] for c in guarded["commands_applied"])
        explain = gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "explain", "guarded"]).stdout
        assert "gradient explosion" in explain and "step 351" in explain, explain
        assert "Suggested fix: clip the global gradient norm" in explain, explain

        observed, _ = train(tmp, "observed", "--steps", "120", "--seed", "11", "--monitor", mon.address,
                            "--mode", "observe", "--run-id", "observed")
    plain, _ = train(tmp, "plain", "--steps", "120", "--seed", "11", "--no-monitor")
    again, _ = train(tmp, "again", "--steps", "120", "--seed", "11", "--no-monitor")
    other, _ = train(tmp, "other", "--steps", "120", "--seed", "12", "--no-monitor")
    assert plain["loss_curve"] == again["loss_curve"], "same seed, different loss curves"
    assert plain["loss_curve"] != other["loss_curve"], "different seeds, same loss curve"
    assert observed["loss_curve"] == plain["loss_curve"], "observe mode changed the training"
    print("same seed -> identical curve; observe mode -> identical curve to no monitor")


if __name__ == "__main__":
    sys.exit(main())
