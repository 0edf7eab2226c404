"""Soak: the daemon for a given time while viewers come and go and the camera stream drops and
returns; reports RSS, threads and open file descriptors at start and end.

    python tests/soak.py --seconds 120            # prints one JSON object, exit 1 if limits are broken

Start and end are measured in the same state (camera streaming, no viewer connected), after a
warm-up that has been through one drop and one round of viewers, so lazily made buffers and
threads are already counted at the start.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemonproc import DaemonProcess  # noqa: E402
from mjpegserver import MjpegCamera  # noqa: E402

HERE = Path(__file__).resolve().parent
VTEST = HERE.parent.parent / "shared" / "media" / "vtest.avi"
RSS_GROWTH_LIMIT_MB = 5.0


def viewer(port: int, seconds: float, stop: threading.Event) -> None:
    import socket

    deadline = time.monotonic() + seconds
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
            while time.monotonic() < deadline and not stop.is_set():
                if not s.recv(65536):
                    break
    except OSError:
        pass


def resources(proc: psutil.Process) -> dict[str, float]:
    return {"rss_mb": round(proc.memory_info().rss / 2**20, 2), "threads": proc.num_threads(),
            "fds": proc.num_fds()}


def settle(d: DaemonProcess, proc: psutil.Process) -> dict[str, float]:
    """Wait for a quiet state (streaming, no viewers), then measure."""
    d.wait_for(lambda: (lambda s: s["source_state"] == "running" and s["viewers"] == 0)(d.json("/api/stats")),
               timeout=60)
    time.sleep(3)
    return resources(proc)


def cycle(d: DaemonProcess, cam: MjpegCamera, rng: random.Random, stop: threading.Event) -> dict[str, int]:
    """One round: a few viewers come and go, and the camera drops out for a few seconds."""
    threads = [threading.Thread(target=viewer, args=(d.port, rng.uniform(1, 6), stop), daemon=True)
               for _ in range(rng.randint(1, 5))]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(2, 4))
    cam.stop()
    d.wait_for(lambda: d.json("/api/stats")["source_state"] == "reconnecting", timeout=20)
    time.sleep(rng.uniform(1, 3))
    cam.start()
    for t in threads:
        t.join(10)
    return {"viewers": len(threads)}


def soak(seconds: float, seed: int = 1) -> dict:
    rng = random.Random(seed)
    cam = MjpegCamera(VTEST).start()
    stop = threading.Event()
    cycles = viewers = 0
    try:
        with DaemonProcess("run", "--source", cam.url, "--port", "0", "--stats-interval", "30", "--threads", "1") as d:
            proc = psutil.Process(d.proc.pid)
            d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 10)
            cycle(d, cam, rng, stop)  # warm-up
            start = settle(d, proc)
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                viewers += cycle(d, cam, rng, stop)["viewers"]
                cycles += 1
            end = settle(d, proc)
            stats = d.json("/api/stats")
            code, took = d.terminate()
    finally:
        stop.set()
        cam.stop()
    report = {
        "seconds": seconds, "cycles": cycles, "viewer_sessions": viewers, "start": start, "end": end,
        "rss_growth_mb": round(end["rss_mb"] - start["rss_mb"], 2),
        "frames_inferred": stats["frames_inferred"], "exit_code": code, "shutdown_s": round(took, 2),
    }
    report["ok"] = (report["rss_growth_mb"] < RSS_GROWTH_LIMIT_MB and end["threads"] == start["threads"]
                    and end["fds"] == start["fds"] and code == 0 and took < 2.0)
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    report = soak(args.seconds, args.seed)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
