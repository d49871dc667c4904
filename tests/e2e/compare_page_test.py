"""The compare page and the run page's log axis and heat map, in Debian's headless Chromium.

Two runs are streamed by a small Python client (synthetic steps, no trainer): "healthy", whose
loss falls, and "collapsed", whose last layer departs first at step 248, whose global gradient
norm spikes at step 252 and then collapses to ~1e-21 (its stream stays open: the run is live).
Checks: /compare?runs=healthy,collapsed draws both runs' datasets on every chart; the gradient
norm's log axis labels its ticks in exponent form (1e-21, not 0.000...001) down past 1e-15; the
run page draws the layer x step heat map; bad compare requests get their 400/404 pages.

Screenshots go to a temp folder; with --docs they are also written to docs/compare-page.png and
docs/gradient-log-axis.png (the README's figures).
"""
import argparse
import html
import json
import math
import pathlib
import queue
import random
import re
import shutil
import sys
import tempfile
import threading

import gwtest
from live_page_test import chromium

STEPS = 600
LAYERS = ["enc1.conv1.weight", "enc1.conv2.weight", "enc2.conv1.weight", "enc2.conv2.weight", "mid.conv.weight",
          "dec2.conv1.weight", "dec2.conv2.weight", "dec1.conv1.weight", "dec1.conv2.weight", "head.weight"]
EXPONENT_TICK = re.compile(r"^(1e-?\d+|0\.01|0\.1|1|10|100)$")


def healthy_step(step, rng):
    loss = 0.65 * math.exp(-step / 180) + 0.08 + rng.gauss(0, 0.01)
    layers = [0.05 * (1 + i / 4) * (1 + 0.1 * rng.random()) for i in range(len(LAYERS))]
    return dict(loss=loss, grad_norm=math.sqrt(sum(v * v for v in layers)), layer_grad_norms=layers,
                jaccard_soft=0.9 - 0.6 * math.exp(-step / 150), learning_rate=1e-3)


def collapsed_step(step, rng):
    s = healthy_step(step, rng)
    layers = s["layer_grad_norms"]
    if step >= 248:  # the head departs first, the rest follow at the spike
        layers[-1] *= 300 if step < 260 else 10 ** (-(step - 260) / 6)
    if 252 <= step < 260:
        layers[:-1] = [v * 2000 for v in layers[:-1]]
    elif step >= 260:
        layers[:-1] = [v * 10 ** (-(step - 260) / (5 + i)) for i, v in enumerate(layers[:-1])]
    layers = [max(v, 1e-22 * (1 + rng.random())) for v in layers]
    if step >= 252:
        s.update(loss=0.693 + rng.gauss(0, 1e-4), jaccard_soft=max(0.0, s["jaccard_soft"] * math.exp(-(step - 252) / 10)))
    s.update(layer_grad_norms=layers, grad_norm=math.sqrt(sum(v * v for v in layers)))
    return s


class SyntheticRun:
    """One run streamed to the monitor from a thread, as a trainer would (observe mode)."""

    def __init__(self, pb, stub, run_id, make_step):
        self.pb, self.outgoing, self.stored, self.error = pb, queue.Queue(), 0, None
        self.acked = threading.Event()
        hello = pb.Hello(run_id=run_id, layer_names=LAYERS, mode=pb.MODE_OBSERVE,
                         config=pb.RunConfig(model="synthetic", total_steps=STEPS, eval_every=100))
        self.outgoing.put(pb.TrainerMessage(hello=hello))
        rng = random.Random(run_id)
        for step in range(1, STEPS + 1):
            self.outgoing.put(pb.TrainerMessage(step=pb.StepReport(step=step, **make_step(step, rng))))
            if step % 100 == 0:
                s = make_step(step, rng)
                self.outgoing.put(pb.TrainerMessage(eval=pb.EvalReport(step=step, loss=s["loss"] * 1.1,
                                                                       jaccard_soft=s["jaccard_soft"] * 0.95)))
        self.thread = threading.Thread(target=self._stream, args=(stub,), daemon=True)
        self.thread.start()

    def _requests(self):
        while (item := self.outgoing.get()) is not None:
            yield item

    def _stream(self, stub):
        try:
            for reply in stub.Stream(self._requests(), timeout=120):
                if reply.HasField("ack"):
                    self.stored = reply.ack.stored_through_step
                    if self.stored >= STEPS:
                        self.acked.set()
                if reply.HasField("rejection"):
                    self.error = reply.rejection.reason
        except Exception as e:  # the stream's end when the test closes it, or a failure to report
            self.error = self.error or repr(e)
        self.acked.set()

    def wait_stored(self):
        assert self.acked.wait(60), f"not all steps acknowledged: {self.stored}"
        assert self.stored >= STEPS, f"stored through {self.stored}, error {self.error}"

    def close(self, goodbye):
        if goodbye:
            self.outgoing.put(self.pb.TrainerMessage(goodbye=self.pb.Goodbye(last_step=STEPS)))
        self.outgoing.put(None)
        self.thread.join(30)


def page_state(url):
    dom = chromium("--dump-dom", url).stdout
    m = re.search(r'<pre id="page-state" hidden="">(.*?)</pre>', dom, re.S)
    assert m and m.group(1), "the page published no state:\n" + dom[:3000]
    return json.loads(html.unescape(m.group(1)))


def check_log_ticks(chart, where):
    ticks = chart["ticks"]
    assert chart["y"] == "logarithmic", f"{where}: y axis is {chart['y']}"
    assert ticks and all(EXPONENT_TICK.match(t) for t in ticks), f"{where}: tick labels {ticks}"
    lowest = min(int(t[2:]) for t in ticks if t.startswith("1e"))
    assert lowest <= -15, f"{where}: the axis does not reach the collapse, ticks {ticks}"
    assert 3 <= len(ticks) <= 12, f"{where}: {len(ticks)} tick labels: {ticks}"
    return ticks


def check_compare(base):
    state = page_state(f"{base}/compare?runs=healthy,collapsed")
    print("compare page:", json.dumps({k: [(d["label"], d["points"]) for d in c["datasets"]]
                                       for k, c in state["charts"].items()}))
    for name in ("loss", "norm", "jaccard", "lr"):
        drawn = {d["label"]: d["points"] for d in state["charts"][name]["datasets"]}
        for run in ("healthy", "collapsed"):
            assert drawn.get(run, 0) >= STEPS * 0.9, f"{name}: run {run} not drawn: {drawn}"
    assert state["charts"]["loss"]["datasets"][1]["points"] == STEPS // 100, "validation points"
    ticks = check_log_ticks(state["charts"]["norm"], "compare page, gradient norm")
    print("compare page: gradient-norm ticks", ticks)
    assert not any("0.000" in t for t in state["charts"]["loss"]["ticks"]), state["charts"]["loss"]["ticks"]


def check_run_page(base):
    state = page_state(f"{base}/runs/collapsed")
    ticks = check_log_ticks(state["charts"]["norm"], "run page, gradient norm")
    heat = state["heatmap"]
    print("run page: gradient-norm ticks", ticks, "heat map", heat, "annotations",
          state["charts"]["norm"]["annotations"])
    assert heat["layers"] == len(LAYERS) and heat["steps"] == STEPS and heat["columns"] >= 100, heat
    assert heat["lo"] < -18 and heat["hi"] > 0, f"heat map range 1e{heat['lo']:.1f}..1e{heat['hi']:.1f}"
    assert state["charts"]["norm"]["annotations"] >= 1, "no event marked on the gradient chart"
    # The hover text of the last column's first layer: the collapsed run's norm there, ~1e-20.
    cell = re.fullmatch(rf"{re.escape(LAYERS[0])}, steps? \d+(–\d+)?: grad norm (\S+)", heat["last_cell"])
    assert cell and float(cell.group(2)) < 1e-15, f"heat map hover: {heat['last_cell']!r}"


def check_refusals(base):
    for query, status, says in [("runs=healthy,nosuch", 404, "There is no run <code>nosuch</code>"),
                                ("runs=" + ",".join(f"r{i}" for i in range(9)), 400, "at most 8 runs"),
                                ("runs=healthy,%3Cb%3E", 400, "is not a run id"), ("", 400, "/compare?runs=")]:
        code, body = gwtest.http_get(f"{base}/compare?{query}")
        assert code == status and says in body, f"/compare?{query}: {code} {body}"


def screenshots(base, out_dir):
    shots = {"compare-page.png": (f"{base}/compare?runs=healthy,collapsed", "1400,820"),
             "gradient-log-axis.png": (f"{base}/runs/collapsed", "1400,1030")}
    for name, (url, size) in shots.items():
        path = out_dir / name
        chromium(f"--screenshot={path}", f"--window-size={size}", "--hide-scrollbars", url)
        assert path.exists() and path.stat().st_size > 20_000, f"{path} missing or blank"
        print(f"screenshot: {path} ({path.stat().st_size} bytes)")
    return shots


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", action="store_true", help="also write the screenshots into docs/")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="gradwatch-compare-")
    gwtest.generate_stubs(tmp)
    import grpc
    from gradwatch.v1 import telemetry_pb2 as pb, telemetry_pb2_grpc

    with gwtest.Monitor() as mon:
        stub = telemetry_pb2_grpc.TelemetryStub(grpc.insecure_channel(mon.address))
        healthy = SyntheticRun(pb, stub, "healthy", healthy_step)
        collapsed = SyntheticRun(pb, stub, "collapsed", collapsed_step)
        try:
            healthy.wait_stored()
            collapsed.wait_stored()
            healthy.close(goodbye=True)
            base = f"http://127.0.0.1:{mon.metrics_port}"
            check_compare(base)
            check_run_page(base)
            check_refusals(base)
            shots_dir = pathlib.Path(tmp) / "screenshots"
            shots_dir.mkdir()
            shots = screenshots(base, shots_dir)
            if args.docs:
                docs = pathlib.Path(__file__).resolve().parents[2] / "docs"
                for name in shots:
                    shutil.copyfile(shots_dir / name, docs / name)
                    print(f"wrote {docs / name}")
        finally:
            collapsed.close(goodbye=False)
    print("compare page: both runs overlaid, exponent ticks on the log axis, heat map drawn")


if __name__ == "__main__":
    sys.exit(main())
