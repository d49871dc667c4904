"""Trainer -> monitor -> /metrics -> CLI, end to end, with real processes on loopback.

gradwatch-train runs 50 steps against gradwatchd on 127.0.0.1:0; the scrape counts 50
steps for the run and passes `promtool check metrics`; `gradwatch runs` lists the run and
`gradwatch watch` shows where the finished run ended. Every binary answers --version.
"""
import json
import re
import shutil
import subprocess
import sys
import time

import gwtest


def main():
    refused = gwtest.run([gwtest.BIN / "gradwatchd", "--listen", "0.0.0.0:0", "--metrics-listen", "",
                          "--data-dir", "/nonexistent"], check=False, timeout=30)
    assert refused.returncode == 2 and "refusing to listen on 0.0.0.0:0" in refused.stderr, refused
    print("non-loopback without auth: refused")

    with gwtest.Monitor() as mon:
        gwtest.run([gwtest.BIN / "gradwatch-train", "--monitor", mon.address, "--run-id", "skeleton",
                    "--steps", "50", "--eval-every", "25", "--log-every", "0", "--mode", "observe"])
        text = mon.scrape()
        steps = gwtest.metric_value(text, "gradwatch_steps_total", run_id="skeleton")
        assert steps == 50, f"expected 50 steps counted for run skeleton, got {steps}\n{text[:3000]}"
        loss = gwtest.metric_value(text, "gradwatch_loss", run_id="skeleton")
        assert loss is not None and 0 <= loss <= 1, f"loss gauge {loss}"
        layers = [l for l in text.splitlines() if l.startswith("gradwatch_layer_grad_norm{")]
        assert len(layers) >= 10, f"expected per-layer series, got {len(layers)}"

        promtool = shutil.which("promtool")
        assert promtool, "promtool not found (scripts/install-deps installs prometheus)"
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, f"promtool check metrics failed:\n{check.stdout}{check.stderr}"

        # The trainer has exited; the monitor sees its stream end a moment later.
        deadline = time.monotonic() + 10
        while True:
            out = gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "--json", "runs"]).stdout
            runs = {r["run_id"]: r for r in map(json.loads, out.splitlines())}
            if runs.get("skeleton", {}).get("state") == "finished" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert "skeleton" in runs, out
        assert runs["skeleton"]["steps"] == 50, runs["skeleton"]
        assert runs["skeleton"]["state"] == "finished", runs["skeleton"]
        table = gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "runs"]).stdout
        assert "skeleton" in table and "finished" in table, table
        # Watching the finished run shows where it ended, not step 0.
        watched = gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "watch", "skeleton"], timeout=30)
        assert watched.stdout.startswith("run skeleton finished\n"), watched.stdout
        assert re.search(r"\nstep 50  loss [0-9.e-]+  jaccard [0-9]", watched.stdout), watched.stdout
        print("watch of the finished run: " + watched.stdout.splitlines()[-1])
    print("walking skeleton: 50 steps counted, promtool clean, run listed")
    versions()


def versions():
    """Every binary says the project's one version; a usage error exits 2 with its name."""
    said = {name: gwtest.run([gwtest.BIN / name, "--version"], timeout=30).stdout.strip()
            for name in ("gradwatch", "gradwatchd", "gradwatch-train")}
    version = said["gradwatch"].split()[-1]
    assert said == {name: f"{name} {version}" for name in said}, said
    typo = gwtest.run([gwtest.BIN / "gradwatch", "wacth", "r"], check=False, timeout=30)
    assert typo.returncode == 2 and typo.stderr.startswith('gradwatch: unknown verb "wacth"; did you mean "watch"?'), \
        typo
    print(f"--version: {said}; a mistyped verb exits 2 with a suggestion")


if __name__ == "__main__":
    sys.exit(main())
