"""bench/faults: the reliability scenarios, one JSON line of steps sent, stored, duplicated
and lost per scenario. Runs the e2e fault tests (monitor killed twice, monitor absent with
the spool replayed, a half-open connection, the trainer killed) and collects the FAULTS
line each prints.

    GRADWATCH_BIN=build/bin python3 bench/faults.py
"""
import json
import os
import pathlib
import subprocess
import sys

E2E = pathlib.Path(__file__).parents[1] / "tests" / "e2e"
SCENARIOS = ["monitor_restart", "absent_monitor", "half_open", "trainer_killed"]


def main():
    results, failed = [], []
    for name in SCENARIOS:
        p = subprocess.run([sys.executable, str(E2E / f"{name}_test.py")], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"), timeout=900)
        lines = [l[len("FAULTS "):] for l in p.stdout.splitlines() if l.startswith("FAULTS ")]
        results += [json.loads(l) for l in lines]
        if p.returncode != 0:
            failed.append(name)
            print(p.stdout + p.stderr, file=sys.stderr)
    print(json.dumps({"bench": "faults", "scenarios": results, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
