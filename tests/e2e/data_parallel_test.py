"""A data-parallel job of 2 ranks (Gloo on CPU, `gradwatch-train --nproc 2`) through the monitor.

- The case with the x1000 gradient on rank 1's batch only: unguarded the job collapses; in guard
  mode the explosion event names rank 1, clipping takes effect on both ranks at the same step
  (both ranks' acks say so), every rank's summary says collapsed: false, and the parameter
  checksums of the ranks match at the end.
- A straggler (rank 1 sleeps 0.4 s in its compute phase on each of 12 steps) is flagged, naming
  rank 1, within straggler_steps + 2 steps of its start.
- A hang (rank 1 never reaches step 40's collectives) is flagged, naming rank 1, within the hang
  bound (hang_min_seconds 4, set with `gradwatch policy`) + 3 s after the job's last step.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import gwtest

TRAIN = gwtest.BIN / "gradwatch-train"
CLI = gwtest.BIN / "gradwatch"
FAULT = "grad_spike@350,factor=1000,rank=1"  # the case's explosion (step 351), on rank 1's batch


def train(tmp, name, *args, timeout=900):
    summary = os.path.join(tmp, name + ".json")
    p = gwtest.run([TRAIN, "--nproc", "2", "--log-every", "0", "--summary-json", summary, *args], timeout=timeout)
    ranks = [json.load(open(summary)), json.load(open(os.path.join(tmp, name + "-rank1.json")))]
    return ranks, p.stderr


def cli(mon, *args):
    return gwtest.run([CLI, "--server", mon.address, "--json", *args]).stdout


def events(mon, run_id):
    return [json.loads(line) for line in cli(mon, "events", run_id).splitlines()]


def case(tmp, mon):
    alone, _ = train(tmp, "alone", "--no-monitor", "--fault", FAULT)
    print(f"unguarded: final loss {alone[0]['final_train_loss']:.4f}, collapsed {alone[0]['collapsed']}")
    assert alone[0]["collapsed"] is True and alone[1]["collapsed"] is True, alone

    guarded, log = train(tmp, "guarded", "--monitor", mon.address, "--run-id", "dp-guard", "--fault", FAULT)
    for rank, summary in enumerate(guarded):
        print(f"guarded rank {rank}: final loss {summary['final_train_loss']:.4f}, val hard Jaccard "
              f"{summary['val_jaccard_hard']:.3f}, commands "
              f"{[(c['action'], c['step']) for c in summary['commands_applied']]}, "
              f"checksum {summary['parameter_checksum']}")
        assert summary["collapsed"] is False, (rank, summary, log)
    assert guarded[0]["parameter_checksum"] == guarded[1]["parameter_checksum"], guarded
    applied = [[(c["id"], c["action"], c["step"]) for c in s["commands_applied"]] for s in guarded]
    assert applied[0] == applied[1], f"the ranks applied different commands or steps: {applied}"

    explosion = [e for e in events(mon, "dp-guard") if e["kind"] == "grad_spike" and e["step"] == 351]
    assert explosion and explosion[0].get("rank") == 1, events(mon, "dp-guard")
    print(f"explosion event: {explosion[0]['message']}")
    clips = [json.loads(line) for line in cli(mon, "commands", "dp-guard").splitlines()]
    clips = [c for c in clips if c["action"] == "set_clipping"]
    assert clips, "no clipping command"
    acks = {a["rank"]: a["applied_at_step"] for a in clips[0]["rank_acks"]}
    print(f"first clipping command {clips[0]['command_id']}: applied at steps {acks} by rank")
    assert sorted(acks) == [0, 1] and len(set(acks.values())) == 1, clips[0]
    run = json.loads(cli(mon, "run", "dp-guard"))
    assert run["world_size"] == 2 and [r["last_step"] for r in run["ranks"]] == [600, 600], run


def straggler(tmp, mon):
    trainer = subprocess.Popen(
        [str(TRAIN), "--nproc", "2", "--steps", "90", "--log-every", "0", "--monitor", mon.address,
         "--run-id", "dp-straggler", "--fault", "stall@40,rank=1,seconds=0.4,count=12"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert trainer.wait(timeout=600) == 0, trainer.stderr.read()
    finally:
        if trainer.poll() is None:
            trainer.kill()
    flagged = [e for e in events(mon, "dp-straggler") if e["kind"] == "straggler"]
    assert flagged and flagged[0].get("rank") == 1, events(mon, "dp-straggler")
    run = json.loads(cli(mon, "policy", "dp-straggler"))
    bound = 41 + int(run["thresholds"].get("straggler_steps", 5)) + 2
    print(f"straggler flagged at step {flagged[0]['step']} (stall from step 41, bound {bound}): "
          f"{flagged[0]['message']}")
    assert flagged[0]["step"] <= bound, flagged[0]


def hang(mon):
    trainer = subprocess.Popen(
        [str(TRAIN), "--nproc", "2", "--nproc-grace", "2", "--steps", "400", "--log-every", "0",
         "--monitor", mon.address, "--run-id", "dp-hang", "--fault", "hang@40,rank=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        gwtest.wait_for_steps(mon.address, "dp-hang", 5, trainer=trainer, timeout=120)
        cli(mon, "policy", "dp-hang", "--threshold", "hang_min_seconds=4")
        gwtest.wait_until("the job's last step",
                          lambda: json.loads(cli(mon, "run", "dp-hang"))["last_step"] >= 40, 120)
        stopped_at = time.monotonic()
        found = gwtest.wait_until("the hang event",
                                  lambda: [e for e in events(mon, "dp-hang") if e["kind"] == "hang"], 30)
        delay = time.monotonic() - stopped_at
        print(f"hang flagged {delay:.1f} s after the job's last step (bound 4 s + 3 s): {found[0]['message']}")
        assert found[0].get("rank") == 1, found
        assert delay <= 7, delay
        assert trainer.poll() is None, "the hung job ended by itself"
    finally:
        trainer.terminate()
        try:
            trainer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            trainer.kill()


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-dp-")
    with gwtest.Monitor() as mon:
        case(tmp, mon)
        straggler(tmp, mon)
        hang(mon)


if __name__ == "__main__":
    sys.exit(main())
