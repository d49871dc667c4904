"""The Kubernetes manifest of `gradwatch launch --launcher kubernetes --dry-run`, checked offline.

There is no Kubernetes cluster here. `kubectl apply --dry-run=client` still needs an API server
for discovery (which kinds exist, where they live) and, to validate fields, its OpenAPI schema.
So this test answers discovery from a stub on 127.0.0.1:0 (ConfigMap, Service, batch/v1 Job;
every object "not found yet") and runs kubectl with --validate=false: kubectl parses the List,
maps each kind and reports what it would create. What this does NOT check: the fields against
the cluster's schema, admission, scheduling, pods starting, ranks finding each other, the
trainer reaching the monitor: none of that was run against a real cluster.
The rendered fields themselves (ranks, torchrun environment, token Secret, resources, config)
are checked here and in the unit tests (server/jobs/tests/kubernetes_test.cc).
Skips (exit 77) without kubectl (Debian's kubernetes-client).
"""
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import gwtest

RESOURCES = {
    "/api/v1": ("v1", [("configmaps", "ConfigMap"), ("services", "Service")]),
    "/apis/batch/v1": ("batch/v1", [("jobs", "Job")]),
}


class Discovery(http.server.BaseHTTPRequestHandler):
    """Kubernetes API discovery for three kinds; every object is not found (so: created)."""

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api":
            self.answer(200, {"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        elif path == "/apis":
            v = {"groupVersion": "batch/v1", "version": "v1"}
            self.answer(200, {"kind": "APIGroupList", "apiVersion": "v1",
                              "groups": [{"name": "batch", "versions": [v], "preferredVersion": v}]})
        elif path in RESOURCES:
            group_version, kinds = RESOURCES[path]
            self.answer(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                              "resources": [{"name": n, "singularName": k.lower(), "namespaced": True, "kind": k,
                                             "verbs": ["create", "get", "list", "patch", "delete"]}
                                            for n, k in kinds]})
        else:
            self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                              "code": 404, "message": "not found"})

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def render(tmp, *args):
    config = os.path.join(tmp, "config.json")
    json.dump({"steps": 200, "threads": 2, "scenario": "seed"}, open(config, "w"))
    return gwtest.run([gwtest.BIN / "gradwatch", "launch", config, "--launcher", "kubernetes", "--dry-run",
                       "--image", "registry.example/gradwatch:1.0", "--monitor-address", "gradwatch.monitoring:7070",
                       "--token-secret", "gradwatch-reporter", *args], check=False)


def check_fields(manifest):
    config_map, service, job = manifest["items"]
    name = job["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4, job["spec"]
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["WORLD_SIZE"]["value"] == "4" and env["MASTER_ADDR"]["value"] == f"{name}-0.{name}", env
    assert "job-completion-index" in env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"], env
    assert env["GRADWATCH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "gradwatch-reporter", env
    assert pod["subdomain"] == name and service["spec"]["clusterIP"] == "None"
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "1" and res["requests"]["cpu"] == "2", res
    config = json.loads(config_map["data"]["config.json"])
    assert config["monitor"] == "gradwatch.monitoring:7070" and config["scenario"] == "seed", config
    return name


def kubectl(kubeconfig, manifest_path):
    return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "apply", "--dry-run=client", "--validate=false",
                           "-o", "name", "-f", manifest_path], capture_output=True, text=True, timeout=60)


def main():
    if not shutil.which("kubectl"):
        print("SKIP: kubectl not found (scripts/install-deps installs Debian's kubernetes-client)")
        return 77
    tmp = tempfile.mkdtemp(prefix="gradwatch-k8s-")
    p = render(tmp, "--run-id", "Exp_1", "--set", 'resources={"nodes": 2, "tasks_per_node": 2, "gpus_per_task": 1}')
    assert p.returncode == 0, p.stderr
    manifest = json.loads(p.stdout)
    name = check_fields(manifest)
    path = os.path.join(tmp, "job.json")
    open(path, "w").write(p.stdout)

    bad = render(tmp, "--run-id", "x", "--set", "monitor=evil:1")
    assert bad.returncode != 0 and "monitor" in bad.stderr, bad.stderr
    missing = render(tmp, "--run-id", "x", "--image", "")
    assert missing.returncode != 0 and "image" in missing.stderr, missing.stderr

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = os.path.join(tmp, "kubeconfig")
    json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "stub",
               "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
               "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": "default"}}],
               "users": [{"name": "stub", "user": {}}]}, open(kubeconfig, "w"))
    try:
        k = kubectl(kubeconfig, path)
        assert k.returncode == 0, k.stderr
        assert k.stdout.split() == [f"configmap/{name}", f"service/{name}", f"job.batch/{name}"], k.stdout
        # kubectl does refuse what it cannot map: the check above can fail.
        manifest["items"][2]["kind"] = "Jobb"
        broken = os.path.join(tmp, "broken.json")
        json.dump(manifest, open(broken, "w"))
        k2 = kubectl(kubeconfig, broken)
        assert k2.returncode != 0 and "Jobb" in k2.stderr, (k2.stdout, k2.stderr)
    finally:
        server.shutdown()
    print(f"kubectl apply --dry-run=client: {' '.join(k.stdout.split())} (4 ranks, 1 GPU each); "
          "not run against a real cluster (no schema validation, no pods)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
