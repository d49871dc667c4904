"""A user scalar and the system metrics, trainer to every way out of the monitor.

gradwatch-train reports the user scalar output_mean (the mean predicted foreground
probability) and, per step, its time by phase and its RSS. Each must come out of the monitor:
`gradwatch export` as CSV (a scalar.output_mean column, numbers that read back exactly) and
JSON Lines (a scalars map, a system map), /metrics (gradwatch_scalar{name}, gradwatch_step_seconds
{phase}, gradwatch_process_resident_bytes; no CUDA memory on a CPU run) and the steps JSON API the
live pages chart (a scalars object and a system object per step, positions named in step_fields).
"""
import csv
import io
import json
import sys

import gwtest

RUN = "scalars"
STEPS = 20


def main():
    with gwtest.Monitor() as mon:
        gwtest.run([gwtest.BIN / "gradwatch-train", "--monitor", mon.address, "--run-id", RUN,
                    "--steps", str(STEPS), "--eval-every", "0", "--log-every", "0", "--mode", "observe"])
        gwtest.wait_for_steps(mon.address, RUN, STEPS)
        check_metrics(mon.scrape())
        check_csv(gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "export", RUN]).stdout)
        check_jsonl(gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "export", RUN,
                                "--format", "jsonl"]).stdout)
        status, body = gwtest.http_get(f"http://127.0.0.1:{mon.metrics_port}/api/v1/runs/{RUN}/steps")
        assert status == 200, (status, body)
        check_api(json.loads(body))
    print("scalars and system metrics: in export (CSV, JSONL), /metrics and the steps API")


def check_metrics(text):
    # gwtest.metric_value takes the metric as `name`: the scalar's label is matched here.
    series = f'gradwatch_scalar{{name="output_mean",run_id="{RUN}"}} '
    mean = next((float(l[len(series):]) for l in text.splitlines() if l.startswith(series)), None)
    assert mean is not None and 0 < mean < 1, f"gradwatch_scalar output_mean: {mean}\n{text[:2000]}"
    for phase in ("data", "forward_backward", "report"):
        seconds = gwtest.metric_value(text, "gradwatch_step_seconds", run_id=RUN, phase=phase)
        assert seconds is not None and 0 <= seconds < 60, f"gradwatch_step_seconds{{phase={phase}}}: {seconds}"
    rss = gwtest.metric_value(text, "gradwatch_process_resident_bytes", run_id=RUN)
    assert rss is not None and rss > 10 * 2**20, f"gradwatch_process_resident_bytes: {rss}"
    assert "gradwatch_cuda_memory_bytes{" not in text, "CUDA memory series on a CPU run"
    assert gwtest.metric_value(text, "gradwatch_scalars_unexported_total", run_id=RUN) == 0
    print(f"/metrics: output_mean {mean:.4f}, RSS {rss / 2**20:.0f} MiB")


def check_csv(text):
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == STEPS, f"{len(rows)} CSV rows"
    for column in ("scalar.output_mean", "data_seconds", "compute_seconds", "report_seconds", "resident_bytes"):
        assert column in rows[0], f"no CSV column {column}: {list(rows[0])}"
        assert all(r[column] != "" for r in rows), f"an empty {column} cell"
    assert "cuda_allocated_bytes" not in rows[0], "CUDA columns on a CPU run"
    values = [float(r["scalar.output_mean"]) for r in rows]
    assert all(0 < v < 1 for v in values), values
    assert all(repr(v) == r["scalar.output_mean"] for v, r in zip(values, rows)), \
        "output_mean is not written at round-trip precision"
    print(f"CSV: scalar.output_mean from {values[0]:.4f} to {values[-1]:.4f}")
    return values


def check_jsonl(text):
    steps = [json.loads(line) for line in text.splitlines() if json.loads(line)["type"] == "step"]
    assert len(steps) == STEPS, f"{len(steps)} JSONL steps"
    for s in steps:
        assert 0 < s["scalars"]["output_mean"] < 1, s["scalars"]
        assert {"data_seconds", "compute_seconds", "report_seconds", "resident_bytes"} <= set(s["system"]), s["system"]
    ms = {k: 1000 * sum(s["system"][k] for s in steps) / len(steps)
          for k in ("data_seconds", "compute_seconds", "report_seconds")}
    print("JSONL: mean step time by phase, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()))


def check_api(reply):
    fields = reply["step_fields"]
    steps = reply["steps"]
    assert len(steps) == STEPS, f"{len(steps)} steps from the API"
    scalars, system = fields.index("scalars"), fields.index("system")
    for s in steps:
        assert 0 < s[scalars]["output_mean"] < 1, s
        assert s[system]["resident_bytes"] > 0 and s[system]["compute_seconds"] >= 0, s
    print(f"steps API: fields {fields}")


if __name__ == "__main__":
    sys.exit(main())
