"""Real Prometheus and Alertmanager (Debian's binaries) on free loopback ports against a
real run with an injected explosion:

- Prometheus scrapes gradwatchd; the explosion alert reaches a webhook receiver (this
  test's own HTTP server) and gradwatchd's event log within 15 s of the spike;
- a 2-rank data-parallel job whose rank 1 hangs (never reaches step 30's collectives): the
  hang alert, naming the run, reaches the receiver within 15 s of the hang bound
  (hang_min_seconds 3, set with `gradwatch policy`) passing;
- then every panel query of both Grafana dashboards, with their variables substituted,
  returns data from that Prometheus (the per-rank panels from the data-parallel job).
"""
import http.server
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import gwtest

ROOT = pathlib.Path(__file__).parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(http.server.BaseHTTPRequestHandler):
    alerts = []  # (monotonic time, alert)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for a in body.get("alerts", []):
            Receiver.alerts.append((time.monotonic(), a))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_until(what, fn, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = fn()
        except OSError:  # a service still starting
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def query(prom_port, expr):
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def dashboard_queries(run_id):
    for name in ("gradwatch-run.json", "gradwatch-overview.json"):
        d = json.load(open(ROOT / "dashboards/grafana/dashboards" / name))
        for panel in d["panels"]:
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr:
                    expr = expr.replace("$run_id", run_id).replace("${run_id}", run_id)
                    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "5s")
                    expr = expr.replace("$__range", "5m")
                    yield name, panel.get("title", "?"), expr


def hang_job(mon):
    """A 2-rank job whose rank 1 hangs at step 30, with the hang bound lowered to 3 s."""
    job = subprocess.Popen(
        [str(gwtest.BIN / "gradwatch-train"), "--nproc", "2", "--nproc-grace", "2", "--monitor", mon.address,
         "--run-id", "hung", "--steps", "400", "--log-every", "0", "--fault", "hang@30,rank=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    gwtest.wait_for_steps(mon.address, "hung", 3, trainer=job, timeout=120)
    gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "policy", "hung",
                "--threshold", "hang_min_seconds=3"])
    return job


def job_stalled(mon):
    """The time the hung job's last step (30) was seen, once it was."""
    run = json.loads(gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "--json", "run", "hung"]).stdout)
    return time.monotonic() if run["last_step"] >= 30 else None


def main():
    # Debian names the Alertmanager binary prometheus-alertmanager.
    alertmanager = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    assert shutil.which("prometheus") and alertmanager, \
        "prometheus or alertmanager not found (scripts/install-deps installs prometheus, prometheus-alertmanager)"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gradwatch-alerting-"))
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    procs = []
    with gwtest.Monitor() as mon:
        try:
            am_port, prom_port = free_port(), free_port()
            (tmp / "alertmanager.yml").write_text(f"""
route:
  receiver: both
  group_by: [alertname, run_id]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: both
    webhook_configs:
      - url: http://127.0.0.1:{receiver.server_port}/
      - url: http://127.0.0.1:{mon.metrics_port}/api/v1/alerts/webhook
""")
            rules = tmp / "gradwatch.rules.yml"
            shutil.copy(ROOT / "dashboards/prometheus/rules/gradwatch.rules.yml", rules)
            (tmp / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{rules}]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]
scrape_configs:
  - job_name: gradwatch
    static_configs: [{{targets: ['127.0.0.1:{mon.metrics_port}']}}]
""")
            log = open(tmp / "services.log", "w")
            procs.append(subprocess.Popen(
                [alertmanager, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am'}",
                 f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="], stdout=log, stderr=log))
            procs.append(subprocess.Popen(
                ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=log))
            wait_until("Prometheus to scrape the monitor",
                       lambda: query(prom_port, 'up{job="gradwatch"} == 1'), 60)

            trainer = subprocess.Popen(
                [str(gwtest.BIN / "gradwatch-train"), "--monitor", mon.address, "--run-id", "alerted",
                 "--scenario", "seed", "--steps", "1200", "--log-every", "0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(trainer)
            spike_at = None
            for line in trainer.stderr:
                if "injected gradient" in line:
                    spike_at = time.monotonic()
                    break
            assert spike_at, "the trainer never injected its spike"
            # Guard releases its clipping after 200 quiet steps; keep it on so that the clipping
            # panel still has data when the dashboards are queried after the run.
            gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "policy", "alerted",
                        "--policy", "release_after=0"])
            threading.Thread(target=trainer.stderr.read, daemon=True).start()

            def explosion():
                return [(t, a) for t, a in Receiver.alerts
                        if a["labels"].get("alertname") == "GradwatchGradientExplosion"
                        and a["labels"].get("run_id") == "alerted"]
            (t, alert), = explosion()[:1] or [wait_until("the explosion alert at the receiver", explosion, 30)[0]]
            delay = t - spike_at
            print(f"explosion alert at the webhook receiver {delay:.1f} s after the spike")
            assert delay <= 15, f"the alert took {delay:.1f} s (limit 15 s)"
            events = lambda: [json.loads(l) for l in gwtest.run(
                [gwtest.BIN / "gradwatch", "--server", mon.address, "--json", "events", "alerted"]).stdout.splitlines()]
            wait_until("the alert in the run's events",
                       lambda: [e for e in events() if e["kind"] == "alert" and "GradwatchGradientExplosion" in e["message"]],
                       15)
            trainer.wait(timeout=300)
            procs.append(hang_job(mon))

            def hang_alert():
                return [(t, a) for t, a in Receiver.alerts
                        if a["labels"].get("alertname") == "GradwatchRankHang" and a["labels"].get("run_id") == "hung"]
            stalled_at = wait_until("the hung job's last step", lambda: job_stalled(mon), 120)
            (t, alert), = hang_alert()[:1] or [wait_until("the hang alert at the receiver", hang_alert, 30)[0]]
            delay = t - stalled_at
            print(f"hang alert at the webhook receiver {delay:.1f} s after the job's last step (bound 3 s)")
            assert delay <= 3 + 15, f"the hang alert took {delay:.1f} s (limit 3 s + 15 s)"
            time.sleep(3)  # a few more scrapes after the runs' last steps

            empty = []
            total = gpu_only = 0
            for dash, title, expr in dashboard_queries("alerted"):
                if "gradwatch_cuda_" in expr or "gradwatch_device_" in expr:
                    gpu_only += 1  # a CUDA device's series: none on this CPU run
                    continue
                if "gradwatch_rank_" in expr:  # per-rank panels: the data-parallel job's
                    expr = expr.replace('"alerted"', '"hung"')
                total += 1
                if not query(prom_port, expr):
                    empty.append(f"{dash} / {title}: {expr}")
            assert not empty, f"{len(empty)} of {total} panel queries returned no data:\n" + "\n".join(empty)
            print(f"all {total} panel queries of both dashboards returned data "
                  f"({gpu_only} CUDA-only queries not asked on this CPU run)")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            receiver.shutdown()


if __name__ == "__main__":
    sys.exit(main())
