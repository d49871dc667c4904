"""Tokens from the command line's side: a trainer with a reporter token streams its run,
the client reads with a viewer token, is told which role it lacks without one, and
gradwatchd with tokens may listen beyond loopback.
"""
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request

import gwtest

TOKENS = {"tokens": [{"token": "operator-token-0123456789", "role": "operator"},
                     {"token": "viewer-token-0123456789", "role": "viewer"},
                     {"token": "reporter-token-0123456789", "role": "reporter", "run_id": "tokened"}]}


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-tokens-")
    path = os.path.join(tmp, "tokens.json")
    json.dump(TOKENS, open(path, "w"))
    with gwtest.Monitor(extra_args=("--tokens", path)) as mon:
        env = dict(os.environ, GRADWATCH_TOKEN="reporter-token-0123456789")
        p = gwtest.subprocess.run([str(gwtest.BIN / "gradwatch-train"), "--monitor", mon.address, "--run-id",
                                   "tokened", "--steps", "30", "--log-every", "0", "--mode", "observe"],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "refused" not in p.stderr, p.stderr
        cli = [gwtest.BIN / "gradwatch", "--server", mon.address, "--json"]
        runs = gwtest.run([*cli, "--token", "viewer-token-0123456789", "runs"]).stdout
        assert json.loads(runs)["steps"] == 30, runs
        denied = gwtest.run([*cli, "runs"], check=False)
        assert denied.returncode == 1 and "no token: this call needs the viewer role" in denied.stderr, denied.stderr
        stop = gwtest.run([*cli, "--token", "viewer-token-0123456789", "stop", "tokened"], check=False)
        assert stop.returncode == 1 and "needs the operator role" in stop.stderr, stop.stderr
        http_needs_tokens(mon)
    print("reporter token streamed, viewer token read, missing and wrong roles named")


def http(mon, path, token=None, data=None):
    """(status, body) of an HTTP request to the monitor, the token in the Authorization header."""
    req = urllib.request.Request(f"http://127.0.0.1:{mon.metrics_port}{path}", data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")  # what Alertmanager sends; others get 415
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def http_needs_tokens(mon):
    status, body = http(mon, "/metrics")
    assert status == 401 and "viewer role" in body, (status, body)
    status, body = http(mon, "/metrics", "viewer-token-0123456789")
    assert status == 200 and "gradwatch_steps_total" in body, status
    status, body = http(mon, "/api/v1/runs/tokened/steps?after=0")
    assert status == 401, status
    status, body = http(mon, "/api/v1/runs/tokened/steps?after=0&token=viewer-token-0123456789")
    assert status == 200 and json.loads(body)["steps"], status  # the live page's own requests
    alert = json.dumps({"alerts": [{"labels": {"run_id": "tokened", "alertname": "Test"}, "status": "firing"}]})
    status, body = http(mon, "/api/v1/alerts/webhook", "viewer-token-0123456789", alert.encode())
    assert status == 403 and "operator role" in body, (status, body)
    status, body = http(mon, "/api/v1/alerts/webhook", "operator-token-0123456789", alert.encode())
    assert status == 200 and json.loads(body)["recorded"] == 1, (status, body)
    status, body = http(mon, "/")
    assert status == 200 and "gradwatch runs" in body, status  # the page shell holds no data
    print("HTTP: /metrics and /api need a token (401 without, 403 for a viewer posting alerts)")


if __name__ == "__main__":
    sys.exit(main())
