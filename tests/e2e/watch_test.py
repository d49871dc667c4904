"""`gradwatch watch` in a real terminal (tmux): during a live run the screen shows the step
advancing and, once the scenario's explosion hits, the event; piped, it prints lines, and a
run that has already ended shows its events and last step.
"""
import shutil
import subprocess
import sys
import time

import gwtest


def screen(session):
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def step_on(text):
    for line in text.splitlines():
        if line.startswith("step "):
            return int(line.split()[1])
    return -1


def main():
    assert shutil.which("tmux"), "tmux not found (scripts/install-deps installs it)"
    session = f"gradwatch-watch-{int(time.time())}"
    with gwtest.Monitor(extra_args=("--stall-timeout-ms", "2000")) as mon:
        trainer = subprocess.Popen(
            [str(gwtest.BIN / "gradwatch-train"), "--monitor", mon.address, "--run-id", "watched", "--scenario",
             "seed", "--steps", "3000", "--log-every", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "run", "watched"],
                             check=False).returncode != 0:
                assert time.monotonic() < deadline, "the run never appeared"
                time.sleep(0.1)
            subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "30",
                            f"{gwtest.BIN / 'gradwatch'} --server {mon.address} watch watched; sleep 60"], check=True)
            first = second = -1
            deadline = time.monotonic() + 30
            while first < 0 and time.monotonic() < deadline:
                first = step_on(screen(session))
                time.sleep(0.2)
            while second <= first and time.monotonic() < deadline:
                time.sleep(0.5)
                second = step_on(screen(session))
            assert 0 <= first < second, (first, second, screen(session))
            text = ""
            while "critical" not in text and time.monotonic() < deadline + 20:
                time.sleep(0.5)
                text = screen(session)
            assert "critical" in text and "grad norm" in text and "/ 3000" in text, text
            print(f"watch: step {first} -> {second} on screen, then the explosion event:")
            print("\n".join(l for l in text.splitlines() if l.strip())[:1500])
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
            trainer.kill()
            trainer.wait()

        # The killed run fails after the stall timeout; watching it then prints plain lines.
        piped = gwtest.run([gwtest.BIN / "gradwatch", "--server", mon.address, "watch", "watched"], timeout=60,
                           check=False)
        assert "\033[" not in piped.stdout and piped.stdout.startswith("run watched "), piped.stdout[:2000]
        # The run had ended before this watch: its events and last step come from the store.
        assert "critical" in piped.stdout and "\nstep " in piped.stdout, piped.stdout[:2000]
        assert piped.returncode == 1 and "ended: failed" in piped.stderr, (piped.returncode, piped.stderr)
    print("piped: plain lines, the ended run's events and last step; a failed run exits 1")


if __name__ == "__main__":
    sys.exit(main())
