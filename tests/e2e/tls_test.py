"""TLS on the monitor's gRPC port, with certificates made here by openssl: a client
without the CA cannot connect, one with it can; a launched job reaches its monitor over
TLS; with --tls-client-ca a client must present a certificate signed by that CA.
"""
import json
import os
import subprocess
import sys
import tempfile

import gwtest


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=gradwatch test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=gradwatch {name}", cwd=d)
        open(os.path.join(d, f"{name}.ext"), "w").write(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def main():
    d = tempfile.mkdtemp(prefix="gradwatch-tls-")
    make_certs(d)
    ca, cert, key = (os.path.join(d, f) for f in ("ca.pem", "server.pem", "server.key"))
    tls = ("--tls-cert", cert, "--tls-key", key, "--tls-ca", ca)
    with gwtest.Monitor(extra_args=tls) as mon:
        base = [gwtest.BIN / "gradwatch", "--server", mon.address, "--timeout-ms", "3000"]
        plain = gwtest.run([*base, "runs"], check=False)
        assert plain.returncode == 1 and "pass --tls-ca" in plain.stderr, plain.stderr
        gwtest.run([*base, "--tls-ca", ca, "runs"])
        p = gwtest.run([*base, "--tls-ca", ca, "launch", "--run-id", "over-tls", "--set", "steps=20",
                        "--set", "log_every=0"])
        run = json.loads(gwtest.run([*base, "--tls-ca", ca, "--json", "run", "over-tls"]).stdout)
        assert run["steps"] == 20 and run["job"]["state"] == "succeeded", run
        print("TLS: plain client refused, client with the CA served, a launched job streamed 20 steps over TLS")

    client = ("--tls-cert", os.path.join(d, "client.pem"), "--tls-key", os.path.join(d, "client.key"))
    job_client = ("--tls-job-cert", os.path.join(d, "client.pem"), "--tls-job-key", os.path.join(d, "client.key"))
    with gwtest.Monitor(extra_args=(*tls, "--tls-client-ca", ca, *job_client)) as mon:
        base = [gwtest.BIN / "gradwatch", "--server", mon.address, "--timeout-ms", "3000", "--tls-ca", ca]
        anonymous = gwtest.run([*base, "runs"], check=False)
        assert anonymous.returncode == 1, anonymous.stderr
        gwtest.run([*base, *client, "runs"])
        gwtest.run([*base, *client, "launch", "--run-id", "mutual", "--set", "steps=20", "--set", "log_every=0"])
        run = json.loads(gwtest.run([*base, *client, "--json", "run", "mutual"]).stdout)
        assert run["steps"] == 20 and run["job"]["state"] == "succeeded", run
        missing_key = gwtest.run([*base, "--tls-cert", os.path.join(d, "client.pem"), "runs"], check=False)
        assert missing_key.returncode == 1 and "needs its key" in missing_key.stderr, missing_key.stderr
        print("mutual TLS: a client without a certificate refused, one with a CA-signed certificate served; "
              "a launched job presented --tls-job-cert and streamed 20 steps")


if __name__ == "__main__":
    sys.exit(main())
