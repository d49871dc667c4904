"""TLS on the monitor's HTTP port (--metrics-tls-cert/--metrics-tls-key), with certificates
made here by openssl: a client with the CA reads /metrics over https, plain HTTP is not
served, and a real Prometheus scrapes the monitor over TLS (scheme: https, tls_config
ca_file) until its target is up == 1. Where the civetweb library cannot serve TLS safely,
gradwatchd refuses to start with TLS and says why; the test checks that and skips (77).
"""
import http.client
import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import gwtest
from tls_test import make_certs


SKIPPED = 77  # ctest's SKIP_RETURN_CODE for this test


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(prom_port, expr):
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]


def targets(prom_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=5) as r:
        return [(t["health"], t["lastError"]) for t in json.load(r)["data"]["activeTargets"]]


def check_https(mon, ca):
    url = f"https://127.0.0.1:{mon.metrics_port}/metrics"
    with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=ca), timeout=10) as r:
        assert r.status == 200 and "gradwatch_" in r.read().decode(), "no gradwatch metrics over https"
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{mon.metrics_port}/metrics", timeout=10).read()
        raise AssertionError("plain HTTP was served on the TLS port")
    except (OSError, http.client.HTTPException) as e:
        print(f"plain HTTP on the TLS port refused: {type(e).__name__}")


def scrape_with_prometheus(mon, ca, tmp):
    prom_port = free_port()
    (tmp / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: gradwatch
    scheme: https
    tls_config: {{ca_file: {ca}}}
    static_configs: [{{targets: ['127.0.0.1:{mon.metrics_port}']}}]
""")
    log = open(tmp / "prometheus.log", "w+")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, last = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                up = query(prom_port, 'up{job="gradwatch"}')
                if up and up[0]["value"][1] == "1":
                    print(f"Prometheus scraped https://127.0.0.1:{mon.metrics_port}/metrics: up == 1")
                    return
                last = targets(prom_port)
            except OSError as e:  # Prometheus still starting
                last = repr(e)
            time.sleep(0.5)
        log.seek(0)
        raise AssertionError(f"Prometheus never got up == 1 over TLS; targets: {last}\n{log.read()[-3000:]}")
    finally:
        prom.terminate()
        prom.wait(timeout=30)


def main():
    assert shutil.which("prometheus"), "prometheus not found (scripts/install-deps installs it)"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gradwatch-http-tls-"))
    make_certs(str(tmp))
    ca, cert, key = (str(tmp / f) for f in ("ca.pem", "server.pem", "server.key"))
    try:
        mon = gwtest.Monitor(extra_args=("--metrics-tls-cert", cert, "--metrics-tls-key", key))
    except RuntimeError as e:
        # Debian bookworm's civetweb 1.15 with OpenSSL 3 would crash on the first https
        # connection; gradwatchd refuses TLS up front instead (see TlsLibraryProblem, http.cc).
        assert "civetweb issue #1334" in str(e), e
        print("SKIPPED: this civetweb cannot serve TLS, and gradwatchd said so at startup:\n" + str(e))
        return SKIPPED
    with mon:
        pem = os.path.join(mon.data_dir, "http-tls.pem")
        assert os.stat(pem).st_mode & 0o777 == 0o600, oct(os.stat(pem).st_mode)
        check_https(mon, ca)
        scrape_with_prometheus(mon, ca, tmp)
    assert not os.path.exists(pem), "the key file civetweb read is left behind"
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
