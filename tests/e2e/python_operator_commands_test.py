"""An operator steers a live Python run from the command line: `gradwatch clip`, `lr`, `skip` and
`stop`. Each is acknowledged with the step at which it took effect, and the stored steps from
that step on show it in force: the clipping, the learning rate, the skipped update, the end.
"""
import json
import sys
import time

import gwtest
import pycase


def main():
    with gwtest.Monitor() as mon:
        trainer = pycase.start_case("--monitor", mon.address, "--run-id", "py-steered", "--mode", "observe",
                                    "--steps", "100000", "--spike-step", "-2", "--eval-every", "0")
        try:
            deadline = time.monotonic() + 60
            while pycase.cli(mon, "run", "py-steered", check=False).returncode != 0:
                assert trainer.poll() is None, trainer.stderr.read()
                assert time.monotonic() < deadline, "the run never appeared"
                time.sleep(0.05)
            clip = json.loads(pycase.cli(mon, "clip", "py-steered", "--max-norm", "0.05").stdout)
            assert clip["acknowledged"] and clip["result"] == "applied", clip
            lr = json.loads(pycase.cli(mon, "lr", "py-steered", "--scale", "0.5").stdout)
            assert lr["result"] == "applied", lr
            skip = json.loads(pycase.cli(mon, "skip", "py-steered").stdout)
            assert skip["result"] == "applied", skip
            stop = json.loads(pycase.cli(mon, "stop", "py-steered").stdout)
            assert stop["result"] == "applied", stop
            _, stderr = trainer.communicate(timeout=60)
            assert trainer.returncode == 0, stderr
            assert "stopped by command" in stderr, stderr
        finally:
            if trainer.poll() is None:
                trainer.kill()

        steps = {s["step"]: s for s in pycase.exported_steps(mon, "py-steered")}
        at = clip["applied_at_step"]
        assert steps[at - 1]["clip_kind"] == "KIND_OFF", steps[at - 1]
        assert all(steps[s]["clip_kind"] == "KIND_NORM" and steps[s]["clip_threshold"] == 0.05
                   for s in steps if s >= at)
        lr_at = lr["applied_at_step"]
        assert steps[lr_at - 1]["lr"] == 0.01 and steps[lr_at]["lr"] == 0.005, (steps[lr_at - 1], steps[lr_at])
        skip_at = skip["applied_at_step"]
        skipped = [s for s in steps if steps[s]["update_skipped"]]
        assert skipped == [skip_at], (skipped, skip_at)
        assert max(steps) == stop["applied_at_step"] - 1, (max(steps), stop)
        assert sorted(steps) == list(range(1, max(steps) + 1)), "steps missing"
        run = json.loads(pycase.cli(mon, "run", "py-steered").stdout)
        assert run["state"] in ("stopped", "finished"), run
    print(f"clip at step {at}, lr x0.5 at {lr_at}, skip at {skip_at}, stopped before {stop['applied_at_step']}")


if __name__ == "__main__":
    sys.exit(main())
