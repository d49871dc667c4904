"""An operator steers a live run from the command line: clipping, learning rate, undo, the
audit log, and stop. Each command is acknowledged with the step at which it took effect,
and the run's reported steps from that step on show it in force.
"""
import json
import subprocess
import sys
import time

import gwtest

CLI = gwtest.BIN / "gradwatch"


def cli(mon, *args, check=True):
    return gwtest.run([CLI, "--server", mon.address, "--json", "--timeout-ms", "20000", *args], check=check)


def main():
    with gwtest.Monitor() as mon:
        trainer = subprocess.Popen(
            [str(gwtest.BIN / "gradwatch-train"), "--monitor", mon.address, "--run-id", "steered", "--mode",
             "observe", "--steps", "100000", "--log-every", "0", "--eval-every", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while cli(mon, "run", "steered", check=False).returncode != 0:
                assert time.monotonic() < deadline, "the run never appeared"
                time.sleep(0.05)

            clip = json.loads(cli(mon, "clip", "steered", "--max-norm", "0.05").stdout)
            assert clip["acknowledged"] and clip["result"] == "applied", clip
            lr = json.loads(cli(mon, "lr", "steered", "--scale", "0.5").stdout)
            undo = json.loads(cli(mon, "undo", "steered", lr["command_id"]).stdout)
            assert undo["result"] == "applied", undo
            refused = cli(mon, "undo", "steered", "c-999999", check=False)
            assert refused.returncode == 1 and "no command c-999999" in refused.stderr, refused.stderr
            stop = json.loads(cli(mon, "stop", "steered").stdout)
            _, stderr = trainer.communicate(timeout=60)
            assert trainer.returncode == 0, stderr
            assert f"stopped by command before step {stop['applied_at_step']}" in stderr, stderr
        finally:
            if trainer.poll() is None:
                trainer.kill()

        steps = {s["step"]: s for s in map(json.loads, cli(mon, "export", "steered", "--format", "jsonl").stdout
                                           .splitlines()) if s["type"] == "step"}
        at = clip["applied_at_step"]
        assert steps[at - 1]["clip_kind"] == "KIND_OFF", steps[at - 1]
        assert steps[at]["clip_kind"] == "KIND_NORM" and steps[at]["clip_threshold"] == 0.05, steps[at]
        assert all(steps[s]["clip_kind"] == "KIND_NORM" for s in steps if s >= at)
        lr_at, undo_at = lr["applied_at_step"], undo["applied_at_step"]
        assert steps[lr_at]["lr"] == 0.005 and steps[lr_at - 1]["lr"] == 0.01, (steps[lr_at - 1], steps[lr_at])
        assert steps[undo_at]["lr"] == 0.01, steps[undo_at]
        assert max(steps) == stop["applied_at_step"] - 1, (max(steps), stop)

        audit = [json.loads(line) for line in cli(mon, "commands", "steered").stdout.splitlines()]
        assert [a["action"] for a in audit] == ["set_clipping", "scale_learning_rate", "scale_learning_rate", "stop"]
        assert audit[2]["reason"] == f"undo of {lr['command_id']} (scale_learning_rate)", audit[2]
        assert all(a["issued_by"].startswith("operator") for a in audit)
        assert audit[0]["grad_norm_before"] > 0 and audit[0]["acknowledged"]
    print(f"clip applied at step {at}, lr x0.5 at {lr_at}, undone at {undo_at}, stopped at {stop['applied_at_step']}")


if __name__ == "__main__":
    sys.exit(main())
