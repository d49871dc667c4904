"""Tokens from the command line's side: a trainer with a reporter token streams its run,
the client reads with a viewer token, is told which role it lacks without one, and
gradwatchd with tokens may listen beyond loopback.
"""
import json
import os
import sys
import tempfile

import gwtest

TOKENS = {"tokens": [{"token": "viewer-token-0123456789", "role": "viewer"},
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
    print("reporter token streamed, viewer token read, missing and wrong roles named")


if __name__ == "__main__":
    sys.exit(main())
