"""Step time of the Python case's U-Net on CPU with gradwatch.torch.Session on ÷ off, measured
in one run: two identical models (same seed, same batches), one trained by a plain loop, the
other through a Session reporting to a real gradwatchd (observe mode, so nothing changes the
training), in interleaved blocks so that both arms see the same machine load. Every session cost
is in: fused gradient norms, the update-size prediction, the report, checkpoints every 50 steps.

Prints one JSON line: per-step milliseconds of each arm and overhead_ratio = on / off (the sum
over all blocks), with the median of the per-block ratios beside it. Target: <= 1.03.

    python3 bench/python_overhead/bench.py [--rounds 12 --steps 50]   (GRADWATCH_BIN=build/bin)
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import torch  # noqa: E402

from gradwatch.case.jaccard import jaccard_coef_loss  # noqa: E402
from gradwatch.case.train import BatchSampler, CaseConfig, build  # noqa: E402
from gradwatch.torch import Session  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=50, help="steps per arm per round")
    p.add_argument("--no-update-size", action="store_true", help="Session(measure_update=False)")
    a = p.parse_args()
    os.environ.setdefault("GRADWATCH_BIN", str(ROOT / "build" / "bin"))
    import gwtest  # noqa: E402  (after GRADWATCH_BIN is set)

    torch.set_num_threads(1)
    config = CaseConfig(spike_step=None)
    off_model, off_opt, data, _ = build(config)
    on_model, on_opt, _, _ = build(config)
    off_batches, on_batches = BatchSampler(len(data), 4, 7), BatchSampler(len(data), 4, 7)

    def plain_step(_: int) -> None:
        items = off_batches.next()
        off_opt.zero_grad()
        loss = jaccard_coef_loss(data.masks[items], off_model(data.images[items]))
        loss.backward()
        float(loss)  # the loop reads its loss either way
        off_opt.step()

    with gwtest.Monitor() as mon:
        gw = Session(on_model, on_opt, monitor=mon.address, run_id="bench-python-overhead", mode="observe",
                     loss="jaccard", loss_upper_bound=1.0, log=False,
                     measure_update=not a.no_update_size)

        def guarded_step(step: int) -> None:
            gw.begin_step(step)
            items = on_batches.next()
            on_opt.zero_grad()
            loss = jaccard_coef_loss(data.masks[items], on_model(data.images[items]))
            loss.backward()
            if gw.before_update(float(loss)):
                on_opt.step()
            gw.after_update()

        for s in range(1, 21):  # warm-up: allocator, the stream, the first checkpoint
            plain_step(s)
            guarded_step(s)
        times = {"off": [], "on": []}
        step = 20
        for r in range(a.rounds):
            arms = [("off", plain_step), ("on", guarded_step)]
            for name, fn in arms if r % 2 == 0 else reversed(arms):  # alternate which goes first
                t = time.perf_counter()
                for k in range(a.steps):
                    fn(step + k + 1)
                times[name].append(time.perf_counter() - t)
            step += a.steps
        gw.finish()
        stats = gw.reporter_stats()
    off, on = sum(times["off"]), sum(times["on"])
    n = a.rounds * a.steps
    print(json.dumps({"bench": "python_overhead", "model": "unet(depth=3,base=8) 32x32 batch 4, CPU, 1 thread",
                      "measure_update": not a.no_update_size, "steps_per_arm": n, "off_ms_per_step": round(1000 * off / n, 3),
                      "on_ms_per_step": round(1000 * on / n, 3), "overhead_ratio": round(on / off, 4),
                      "median_block_ratio": round(statistics.median(x / y for x, y in zip(times["on"], times["off"])), 4),
                      "reports_acked_through": stats.acked_through, "dropped": stats.dropped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
