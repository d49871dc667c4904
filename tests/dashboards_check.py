#!/usr/bin/env python3
"""Static checks of gradwatch's Grafana dashboards and their provisioning.

    python3 tests/dashboards_check.py REPO_ROOT

Checks, for every dashboard under dashboards/grafana/dashboards/:
  - the file is valid JSON; dashboard uids are unique; panel ids are unique per dashboard;
  - every datasource (panels, targets, variables, annotations) is ${datasource} or the uid
    provisioned in dashboards/grafana/provisioning/datasources/, and the datasource
    variable defaults to that uid;
  - every metric name in every expression is one gradwatchd exports: the names are parsed
    from server/metrics/src/exporter.cc, and the list kept below must match them;
    histograms may carry _bucket, _sum and _count;
  - every panel except rows has a unit (fieldConfig.defaults.unit) and a description;
  - every rate()/irate()/increase() in a panel or variable uses [$__rate_interval];
    annotations may use an explicit range instead;
  - when promtool is on PATH, every expression parses as PromQL.
It also checks the alerting rules (dashboards/prometheus/rules/*.rules.yml): their metric
names, and that each runbook_url anchor is a heading of docs/runbooks.md.

Standard library only. Exits 1 listing every problem found, 0 when all is well.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Must match server/metrics/src/exporter.cc (checked below when the file is there).
EXPORTED_METRICS = {
    "gradwatch_steps_total",
    "gradwatch_last_step",
    "gradwatch_last_step_timestamp_seconds",
    "gradwatch_loss",
    "gradwatch_grad_norm",
    "gradwatch_grad_norm_zscore",
    "gradwatch_learning_rate",
    "gradwatch_jaccard_ratio",
    "gradwatch_accuracy_ratio",
    "gradwatch_val_loss",
    "gradwatch_clipping_enabled",
    "gradwatch_clipping_threshold",
    "gradwatch_scalar",
    "gradwatch_scalars_unexported_total",
    "gradwatch_step_seconds",
    "gradwatch_process_resident_bytes",
    "gradwatch_cuda_memory_bytes",
    "gradwatch_device_utilization_ratio",
    "gradwatch_step_duration_seconds",
    "gradwatch_layer_grad_norm",
    "gradwatch_rank_local_grad_norm",
    "gradwatch_rank_loss",
    "gradwatch_rank_compute_seconds",
    "gradwatch_rank_last_step",
    "gradwatch_rank_connected",
    "gradwatch_anomalies_total",
    "gradwatch_commands_total",
    "gradwatch_gate_timeouts_total",
    "gradwatch_run_state",
    "gradwatch_run_mode",
    "gradwatch_active_streams",
    "gradwatch_messages_received_total",
    "gradwatch_messages_rejected_total",
    "gradwatch_ingest_latency_seconds",
    "gradwatch_store_lag_records",
    "gradwatch_store_errors_total",
    "gradwatch_store_healthy",
    "gradwatch_build_info",
}
HISTOGRAMS = {"gradwatch_ingest_latency_seconds"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

DATASOURCE_VARIABLE_REFS = {"${datasource}", "$datasource"}
METRIC_RE = re.compile(r"gradwatch_[a-z_]+")
RANGE_FUNC_RE = re.compile(r"\b(rate|irate|increase)\s*\(")
DURATION_RE = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, what):
        self.items.append(f"{where}: {what}")


# --- what gradwatchd exports ------------------------------------------------------------

def exported_metrics(root, problems):
    """Names from exporter.cc when present (so the check cannot drift), else the list."""
    path = os.path.join(root, "server", "metrics", "src", "exporter.cc")
    if not os.path.exists(path):
        print(f"dashboards_check: {path} not found; using the built-in metric list")
        return set(EXPORTED_METRICS), set(HISTOGRAMS)
    with open(path, encoding="utf-8") as f:
        src = f.read()
    names = set(re.findall(r'"(gradwatch_[a-z_]+)"', src))
    histograms = set(re.findall(r'BuildHistogram\(\)\s*\.Name\(\s*"(gradwatch_[a-z_]+)"', src))
    if not names:
        problems.add(path, "no metric names found (expected quoted \"gradwatch_...\" names)")
        return set(EXPORTED_METRICS), set(HISTOGRAMS)
    if names != EXPORTED_METRICS:
        only_cc = sorted(names - EXPORTED_METRICS)
        only_here = sorted(EXPORTED_METRICS - names)
        problems.add("tests/dashboards_check.py",
                     "EXPORTED_METRICS differs from exporter.cc"
                     + (f"; add {only_cc}" if only_cc else "")
                     + (f"; remove {only_here}" if only_here else ""))
    if histograms != HISTOGRAMS:
        problems.add("tests/dashboards_check.py",
                     f"HISTOGRAMS {sorted(HISTOGRAMS)} differs from exporter.cc's {sorted(histograms)}")
    return names, histograms


def check_metric_names(where, expr, names, histograms, problems):
    allowed = set(names)
    for h in histograms:
        allowed.update(h + s for s in HISTOGRAM_SUFFIXES)
    for m in METRIC_RE.findall(expr):
        if m not in allowed:
            problems.add(where, f"metric {m} is not exported by gradwatchd (expr: {expr!r})")


# --- expressions --------------------------------------------------------------------------

def closing_paren(text, open_idx):
    depth = 0
    for i in range(open_idx, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def check_ranges(where, expr, allow_explicit, problems):
    for m in RANGE_FUNC_RE.finditer(expr):
        start = m.end() - 1
        end = closing_paren(expr, start)
        if end < 0:
            problems.add(where, f"unbalanced parentheses after {m.group(1)}( in {expr!r}")
            continue
        ranges = re.findall(r"\[([^\]]+)\]", expr[start:end + 1])
        if not ranges:
            problems.add(where, f"{m.group(1)}() without a range selector in {expr!r}")
            continue
        rng = ranges[-1].strip()
        if rng == "$__rate_interval":
            continue
        if allow_explicit and DURATION_RE.match(rng):
            continue
        want = "[$__rate_interval] or an explicit duration" if allow_explicit else "[$__rate_interval]"
        problems.add(where, f"{m.group(1)}(...[{rng}]) should use {want}: {expr!r}")


def promql_for_promtool(expr):
    """Grafana variables replaced by values promtool can parse."""
    e = re.sub(r"\$\{?__[a-z_]+\}?", "1m", expr)
    return re.sub(r"\$\{?\w+(?::\w+)?\}?", "x", e)


def promtool_parse(exprs, problems):
    """exprs: list of (where, expr). Parses them as recording rules with promtool."""
    promtool = shutil.which("promtool")
    if not promtool:
        print("dashboards_check: promtool not found; PromQL syntax not checked")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for i, (where, expr) in enumerate(exprs):
            path = os.path.join(tmp, "expr.yml")
            with open(path, "w", encoding="utf-8") as f:
                f.write("groups:\n  - name: dashboard\n    rules:\n      - record: dashboard_expr\n"
                        "        expr: " + json.dumps(promql_for_promtool(expr)) + "\n")
            r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
            if r.returncode != 0:
                msg = (r.stderr.strip() or r.stdout.strip()).splitlines()
                problems.add(where, f"PromQL does not parse: {msg[-1] if msg else '?'} (expr: {expr!r})")


# --- dashboards --------------------------------------------------------------------------

def provisioned_uids(root, problems):
    d = os.path.join(root, "dashboards", "grafana", "provisioning", "datasources")
    uids = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if name.endswith((".yml", ".yaml")):
            with open(os.path.join(d, name), encoding="utf-8") as f:
                for line in f:
                    m = re.match(r"^\s*uid:\s*['\"]?([A-Za-z0-9._-]+)['\"]?\s*(#.*)?$", line)
                    if m:
                        uids.append(m.group(1))
    if len(uids) != 1:
        problems.add(d, f"expected exactly one provisioned datasource uid, found {uids}")
    return set(uids)


def iter_panels(panels):
    for p in panels or []:
        yield p
        yield from iter_panels(p.get("panels"))


def check_datasource(where, ds, uids, problems):
    if ds is None:
        problems.add(where, "no datasource")
        return
    uid = ds.get("uid") if isinstance(ds, dict) else ds
    if isinstance(ds, dict) and ds.get("type") not in (None, "prometheus"):
        problems.add(where, f"datasource type {ds.get('type')!r}, expected prometheus")
    if uid not in DATASOURCE_VARIABLE_REFS and uid not in uids:
        problems.add(where, f"datasource uid {uid!r} is neither ${{datasource}} nor the provisioned {sorted(uids)}")


def check_dashboard(path, dash, uids, names, histograms, problems, exprs):
    base = os.path.basename(path)
    for key in ("uid", "title", "schemaVersion"):
        if key not in dash:
            problems.add(base, f"missing {key}")

    # Variables.
    for var in dash.get("templating", {}).get("list", []):
        vw = f"{base} variable {var.get('name')}"
        if var.get("type") == "datasource":
            if var.get("query") != "prometheus":
                problems.add(vw, f"datasource variable of type {var.get('query')!r}, expected prometheus")
            cur = (var.get("current") or {}).get("value")
            if cur not in (None, "") and cur not in uids:
                problems.add(vw, f"defaults to {cur!r}, not the provisioned uid {sorted(uids)}")
        elif var.get("type") == "query":
            check_datasource(vw, var.get("datasource"), uids, problems)
            q = var.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            for expr in filter(None, {q, var.get("definition") or ""}):
                check_metric_names(vw, expr, names, histograms, problems)
                check_ranges(vw, expr, False, problems)

    # Annotations.
    for ann in dash.get("annotations", {}).get("list", []):
        if ann.get("builtIn"):
            continue
        aw = f"{base} annotation {ann.get('name')!r}"
        check_datasource(aw, ann.get("datasource"), uids, problems)
        for expr in filter(None, {ann.get("expr"), (ann.get("target") or {}).get("expr")}):
            check_metric_names(aw, expr, names, histograms, problems)
            check_ranges(aw, expr, True, problems)
            exprs.append((aw, expr))

    # Panels.
    ids = {}
    for p in iter_panels(dash.get("panels")):
        pid = p.get("id")
        pw = f"{base} panel {pid} {p.get('title')!r}"
        if pid is None:
            problems.add(pw, "no id")
        elif pid in ids:
            problems.add(pw, f"id {pid} also used by {ids[pid]!r}")
        else:
            ids[pid] = p.get("title")
        if p.get("type") == "row":
            continue
        unit = (p.get("fieldConfig") or {}).get("defaults", {}).get("unit")
        if not unit:
            problems.add(pw, "no unit (fieldConfig.defaults.unit)")
        if not (p.get("description") or "").strip():
            problems.add(pw, "no description")
        check_datasource(pw, p.get("datasource"), uids, problems)
        targets = p.get("targets") or []
        if not targets:
            problems.add(pw, "no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)):
            problems.add(pw, f"duplicate refIds {refs}")
        for t in targets:
            tw = f"{pw} target {t.get('refId')}"
            if "datasource" in t:
                check_datasource(tw, t.get("datasource"), uids, problems)
            expr = t.get("expr") or ""
            if not expr.strip():
                problems.add(tw, "empty expr")
                continue
            check_metric_names(tw, expr, names, histograms, problems)
            check_ranges(tw, expr, False, problems)
            exprs.append((tw, expr))
    return len(ids)


# --- alerting rules (names and runbooks) --------------------------------------------------

def rule_exprs(text):
    """(line number, expr) for each expr: in a rules file, block scalars included."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, rest, start = len(m.group(1)), m.group(2).strip(), i + 1
        if rest[:1] in ("|", ">"):
            body, i = [], i + 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            out.append((start, "\n".join(body)))
        else:
            out.append((start, rest.strip("'\"")))
            i += 1
    return out


def github_anchor(heading):
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def check_rules(root, names, histograms, problems):
    rules_dir = os.path.join(root, "dashboards", "prometheus", "rules")
    runbooks = os.path.join(root, "docs", "runbooks.md")
    anchors = set()
    if os.path.exists(runbooks):
        with open(runbooks, encoding="utf-8") as f:
            anchors = {github_anchor(l.lstrip("#")) for l in f if l.startswith("#")}
    count = 0
    for name in sorted(os.listdir(rules_dir)) if os.path.isdir(rules_dir) else []:
        if not name.endswith(".rules.yml"):
            continue
        path = os.path.join(rules_dir, name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for line, expr in rule_exprs(text):
            count += 1
            check_metric_names(f"{name}:{line}", expr, names, histograms, problems)
        for url in re.findall(r"runbook_url:\s*['\"]?(\S+?)['\"]?\s*$", text, re.M):
            anchor = url.split("#", 1)[1] if "#" in url else ""
            if not url.endswith("docs/runbooks.md#" + anchor) or not anchor:
                problems.add(name, f"runbook_url {url} does not point into docs/runbooks.md#<anchor>")
            elif anchor not in anchors:
                problems.add(name, f"runbook_url anchor #{anchor} is not a heading of docs/runbooks.md")
    return count


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    root = os.path.abspath(argv[1])
    problems = Problems()
    names, histograms = exported_metrics(root, problems)
    uids = provisioned_uids(root, problems)

    dash_dir = os.path.join(root, "dashboards", "grafana", "dashboards")
    files = sorted(f for f in os.listdir(dash_dir) if f.endswith(".json")) if os.path.isdir(dash_dir) else []
    if not files:
        problems.add(dash_dir, "no dashboards found")
    seen_uids, panels, exprs = {}, 0, []
    for name in files:
        path = os.path.join(dash_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                dash = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            problems.add(name, f"not valid JSON: {e}")
            continue
        uid = dash.get("uid")
        if uid in seen_uids:
            problems.add(name, f"dashboard uid {uid!r} also used by {seen_uids[uid]}")
        seen_uids[uid] = name
        panels += check_dashboard(path, dash, uids, names, histograms, problems, exprs)
    rules = check_rules(root, names, histograms, problems)
    promtool_parse(exprs, problems)

    if problems.items:
        print(f"dashboards_check: FAILED, {len(problems.items)} problem(s):", file=sys.stderr)
        for p in problems.items:
            print("  - " + p, file=sys.stderr)
        return 1
    print(f"dashboards_check: OK: {len(files)} dashboards, {panels} panels, {len(exprs)} expressions, "
          f"{rules} rule expressions, {len(names)} exported metric names")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
