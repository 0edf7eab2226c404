"""Writes a Pi's SD card can afford: while nothing happens, the running daemon writes nothing but
its log lines. Measured from the kernel's own per-process I/O counters (/proc/<pid>/io):
`write_bytes` (what reached the storage layer) must not move, and `wchar` (every byte the process
handed to write(), files, pipes and all) must be exactly the bytes of its log lines."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT

IDLE_S = 12.0
STATS_S = 2.0


def io_counters(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, value = line.split(":")
        out[key] = int(value)
    return out


def tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under the roots."""
    out = {}
    for root in roots:
        for f in root.rglob("*"):
            try:
                st = f.lstat()
            except FileNotFoundError:
                continue
            out[str(f)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_idle_daemon_writes_only_its_log_lines(tmp_path):
    if not Path("/proc/self/io").exists():
        pytest.skip("no /proc/<pid>/io on this kernel")
    scene = tmp_path / "scene"
    scene.mkdir()
    img = np.full((480, 640, 3), 90, np.uint8)  # a still scene with nothing in it to detect
    cv2.rectangle(img, (100, 100), (300, 250), (40, 60, 200), -1)
    cv2.imwrite(str(scene / "still.png"), img)
    home, store, cache, state = tmp_path / "home", tmp_path / "events", tmp_path / "cache", tmp_path / "state"
    for d in (home, cache, state):
        d.mkdir()
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text(f'[record]\nenabled = true\ndir = "{store}"\n[stats]\ninterval = {STATS_S}\n')
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(cache), XDG_STATE_HOME=str(state),
               TMPDIR=str(state), EDGEDETECT_CACHE_DIR=str(cache / "edgedetect"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen([sys.executable, "-m", "edgedetect", "run", "--config", str(cfg), "--source", str(scene),
                             "--loop", "--port", "0", "--threads", "1"],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    log = bytearray()
    lines = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.extend(line)
            lines.set()

    threading.Thread(target=read, daemon=True).start()

    def between_lines() -> int:
        """Wait for a stats line, then half an interval: the log is drained, the next line far."""
        lines.clear()
        assert lines.wait(3 * STATS_S), log.decode()[-2000:]
        time.sleep(STATS_S / 2)
        return len(log)

    try:
        deadline = time.monotonic() + 60
        while b"edgedetect.pipeline.stats" not in log:
            assert proc.poll() is None and time.monotonic() < deadline, log.decode()[-2000:]
            time.sleep(0.1)
        between_lines()  # past start-up: the store is open, the model loaded
        logged0 = between_lines()
        io0, files0 = io_counters(proc.pid), tree(tmp_path)
        time.sleep(IDLE_S)
        logged1 = between_lines()
        io1, files1 = io_counters(proc.pid), tree(tmp_path)
    finally:
        proc.terminate()
        proc.wait(10)
    window = log[logged0:logged1].decode()
    assert window.count("edgedetect.pipeline.stats") >= IDLE_S / STATS_S
    # running, and nothing happened: the short line names no counter that changed
    assert " fps, inference " in window and "record_events_stored" not in window
    changed = sorted(k for k in files0.keys() | files1.keys() if files0.get(k) != files1.get(k))
    assert changed == []
    assert io1["write_bytes"] - io0["write_bytes"] == 0  # nothing reached the disk
    assert io1["wchar"] - io0["wchar"] == logged1 - logged0  # every byte written was a log line
