"""The monitor's own live page, in Debian's headless Chromium, during a live run: the charts
show the run's steps and the timeline its events and commands.

With --screenshot PATH it also saves a picture of the page (the README's).
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time

import gwtest


def chromium(*args, timeout=60):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium not found (scripts/install-deps installs it)"
    profile = tempfile.mkdtemp(prefix="gradwatch-chromium-")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=6000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=timeout)


def number(dom, element_id):
    m = re.search(rf'id="{element_id}">(\d+)<', dom)
    return int(m.group(1)) if m else -1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--screenshot")
    args = parser.parse_args()
    with gwtest.Monitor() as mon:
        trainer = subprocess.Popen(
            [str(gwtest.BIN / "gradwatch-train"), "--monitor", mon.address, "--run-id", "live", "--scenario", "seed",
             "--steps", "4000", "--log-every", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for line in trainer.stderr:  # wait until the monitor has acted on the explosion
                if "applied c-" in line:
                    break
            url = f"http://127.0.0.1:{mon.metrics_port}/runs/live"
            page = chromium("--dump-dom", url)
            dom = page.stdout
            steps, events, commands = number(dom, "steps-count"), number(dom, "events-count"), number(dom, "commands-count")
            print(f"live page: {steps} steps charted, {events} events, {commands} commands")
            assert steps > 100, dom[:2000] + page.stderr[-2000:]
            assert events >= 1 and "grad_spike" in dom, dom[:3000]
            assert commands >= 1 and "set_clipping" in dom, dom[:3000]
            assert trainer.poll() is None, "the run ended before the page was checked: not a live test"
            assert re.search(r'id="state">running<', dom), "state is not running"
            assert "<canvas" in dom
            listing = chromium("--dump-dom", f"http://127.0.0.1:{mon.metrics_port}/").stdout
            assert 'href="/runs/live"' in listing, listing[:2000]
            if args.screenshot:
                chromium(f"--screenshot={args.screenshot}", "--window-size=1400,1750", "--hide-scrollbars", url)
                print(f"screenshot: {args.screenshot}")
        finally:
            trainer.kill()
            trainer.wait()


if __name__ == "__main__":
    sys.exit(main())
