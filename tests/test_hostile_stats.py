"""cpu_percent.system read for real: a daemon process under a CPU load that the test makes,
read from its first stats log line and from /api/stats (each request on its own HTTP thread).

psutil.cpu_percent(None) keeps its baseline per calling thread, and a thread's first call
returns 0.0: read from the stats thread and from fresh HTTP threads it said 0.0 under full
load (the first log line, and 2 of 10 API readings). One sampler now computes the figure."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from conftest import VTEST
from daemonproc import DaemonProcess

SYSTEM = re.compile(r"edgedetect\.pipeline\.stats: .*\bcpu [0-9]+% \(system ([0-9]+)%\)")


@pytest.fixture
def cpu_load():
    """One busy process per core, for the length of the test."""
    import os

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(5)


@pytest.mark.slow  # about 16 s
def test_system_cpu_is_never_zero_under_load(cpu_load):
    with DaemonProcess("run", "--source", str(VTEST), "--loop", "--port", "0", "--stats-interval", "2") as d:
        first = d.wait_for(lambda: [m for ln in d.lines if (m := SYSTEM.search(ln))], timeout=20)[0]
        assert float(first.group(1)) > 0, first.string
        readings = []
        for _ in range(10):  # over a second apart: most readings take a new sample, on an HTTP thread
            readings.append(d.json("/api/stats")["cpu_percent"]["system"])
            time.sleep(1.1)
        assert all(r > 0 for r in readings), readings
        logged = [float(m.group(1)) for ln in d.lines if (m := SYSTEM.search(ln))]
        assert len(logged) >= 5 and all(v > 0 for v in logged), logged
