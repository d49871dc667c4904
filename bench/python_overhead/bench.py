"""Step time of the Python case's U-Net on CPU with gradwatch.torch.Session on ÷ off, measured
in one run: three identical models (same seed, same batches) trained in interleaved blocks, so
that all arms see the same machine load (the order rotates each round):

  off    a plain loop, no gradwatch at all;
  local  a Session without a monitor: gradient norms, update-size prediction, checkpoints every
         50 steps, nothing sent (the off arm of the C++ bench/trainer_overhead.cc);
  on     a Session reporting to a real gradwatchd (observe mode, so nothing changes the training):
         every session cost is in.

The C++ bench runs torch on 1 thread, as here, and its monitor on the same machine (in-process);
here gradwatchd is a separate process and the session's gRPC client runs in its helper process
(Session(reporter_process=True), the default; --thread-reporter for the in-process threads).

Each arm is timed over its steps alone, as in the C++ bench. After an on block, untimed, the
bench waits until the monitor has stored its last report, so that work the helper and gradwatchd
still owe for the block does not run into the next arm's; that wait is mostly the monitor's
commit interval (10 ms), idle time no training step waits for, and is printed beside
(flush_ms_per_block). With --time-flush it is charged to the on arm as well: an upper bound
(~5 ms a block, ~0.1 ms a step, here).

Prints one JSON line: per-step milliseconds of each arm (the sum over all blocks),
overhead_ratio = on / off (the whole session), reporting_ratio = on / local (what the C++ bench's
overhead_ratio measures: the reporting alone), the medians of the per-block ratios beside them,
the CPU the helper process and gradwatchd spent per on step, and the load average. Target: <= 1.03.

On a shared machine the wall-clock figures move with other people's work far more than with the
session's. cpu_overhead_ratio is steadier: CPU seconds, not wall-clock, of the training process
per step on (plus the helper's and gradwatchd's, all charged to the on arm) / off.

    python3 bench/python_overhead/bench.py [--rounds 12 --steps 50]   (GRADWATCH_BIN=build/bin)
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Optional

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import torch  # noqa: E402

from gradwatch.case.jaccard import jaccard_coef_loss  # noqa: E402
from gradwatch.case.train import BatchSampler, CaseConfig, build  # noqa: E402
from gradwatch.torch import Session  # noqa: E402


def cpu_seconds(pid: Optional[int]) -> float:
    """User + system CPU of a process so far (Linux); 0 without one."""
    if pid is None:
        return 0.0
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=50, help="steps per arm per round")
    p.add_argument("--no-update-size", action="store_true", help="Session(measure_update=False)")
    p.add_argument("--thread-reporter", action="store_true", help="Session(reporter_process=False)")
    p.add_argument("--time-flush", action="store_true",
                   help="charge the wait for the monitor to store each on block to the on arm")
    a = p.parse_args()
    os.environ.setdefault("GRADWATCH_BIN", str(ROOT / "build" / "bin"))
    import gwtest  # noqa: E402  (after GRADWATCH_BIN is set)

    torch.set_num_threads(1)
    config = CaseConfig(spike_step=None)
    off_model, off_opt, data, _ = build(config)
    models = {name: build(config)[:2] for name in ("local", "on")}
    batches = {name: BatchSampler(len(data), 4, 7) for name in ("off", "local", "on")}

    def plain_step(_: int) -> None:
        items = batches["off"].next()
        off_opt.zero_grad()
        loss = jaccard_coef_loss(data.masks[items], off_model(data.images[items]))
        loss.backward()
        float(loss)  # the loop reads its loss either way
        off_opt.step()

    def guarded(name: str, gw: Session):
        model, opt = models[name]

        def step(s: int) -> None:
            gw.begin_step(s)
            items = batches[name].next()
            opt.zero_grad()
            loss = jaccard_coef_loss(data.masks[items], model(data.images[items]))
            loss.backward()
            if gw.before_update(float(loss)):
                opt.step()
            gw.after_update()
        return step

    with gwtest.Monitor() as mon:
        sessions = {name: Session(*models[name], monitor=mon.address if name == "on" else None,
                                  run_id="bench-python-overhead", mode="observe", loss="jaccard",
                                  loss_upper_bound=1.0, log=False, measure_update=not a.no_update_size,
                                  reporter_process=not a.thread_reporter) for name in ("local", "on")}
        arms = [("off", plain_step), ("local", guarded("local", sessions["local"])), ("on", guarded("on", sessions["on"]))]
        for s in range(1, 21):  # warm-up: allocator, the stream, the first checkpoint
            for _, fn in arms:
                fn(s)
        reporter = sessions["on"]._reporter  # noqa: SLF001 (a bench: the helper's pid, its flush)
        reporter.flush(30.0)
        helper = getattr(getattr(reporter, "_proc", None), "pid", None)
        cpu0 = cpu_seconds(helper), cpu_seconds(mon.proc.pid)
        times = {name: [] for name, _ in arms}
        cpu = {name: 0.0 for name, _ in arms}  # this process's CPU seconds per arm
        flushes = []  # seconds until the monitor had stored each on block
        step = 20
        for r in range(a.rounds):
            for name, fn in arms[r % 3:] + arms[:r % 3]:  # rotate which goes first
                t, c = time.perf_counter(), time.process_time()
                for k in range(a.steps):
                    fn(step + k + 1)
                stepped = time.perf_counter()
                if name == "on":
                    reporter.flush(30.0)
                    flushes.append(time.perf_counter() - stepped)
                times[name].append((time.perf_counter() if a.time_flush else stepped) - t)
                cpu[name] += time.process_time() - c
            step += a.steps
        cpu1 = cpu_seconds(helper), cpu_seconds(mon.proc.pid)
        for gw in sessions.values():
            gw.finish()
        stats = sessions["on"].reporter_stats()
    total = {name: sum(t) for name, t in times.items()}
    n = a.rounds * a.steps

    def median_ratio(x: str, y: str) -> float:
        return round(statistics.median(p / q for p, q in zip(times[x], times[y])), 4)

    print(json.dumps({"bench": "python_overhead", "model": "unet(depth=3,base=8) 32x32 batch 4, CPU, 1 thread",
                      "measure_update": not a.no_update_size, "flush_timed": a.time_flush,
                      "reporter": "thread" if a.thread_reporter else "process", "rounds": a.rounds,
                      "steps_per_arm": n, "off_ms_per_step": round(1000 * total["off"] / n, 3),
                      "local_ms_per_step": round(1000 * total["local"] / n, 3),
                      "on_ms_per_step": round(1000 * total["on"] / n, 3),
                      "overhead_ratio": round(total["on"] / total["off"], 4),
                      "median_block_ratio": median_ratio("on", "off"),
                      "reporting_ratio": round(total["on"] / total["local"], 4),
                      "median_block_reporting_ratio": median_ratio("on", "local"),
                      "flush_ms_per_block": round(1000 * statistics.mean(flushes), 2),
                      "helper_cpu_ms_per_step": round(1000 * (cpu1[0] - cpu0[0]) / n, 3),
                      "monitor_cpu_ms_per_step": round(1000 * (cpu1[1] - cpu0[1]) / n, 3),
                      "cpu_ms_per_step": {name: round(1000 * c / n, 3) for name, c in cpu.items()},
                      "cpu_overhead_ratio": round((cpu["on"] + sum(cpu1) - sum(cpu0)) / cpu["off"], 4),
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      "reports_acked_through": stats.acked_through, "dropped": stats.dropped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
