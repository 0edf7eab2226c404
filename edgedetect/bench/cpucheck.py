"""How many cores' worth of inference the machine really runs at once.

`os.cpu_count()` counts what the kernel shows, not what the hardware delivers: a VM's two
vCPUs may be two hyperthreads of one core, or capped by the host. Pipelining can only beat a
serial loop with real parallel capacity, so `bench` measures it: one invoke loop alone, then one
per core side by side in separate processes (no GIL shared), and reports the ratio of the
summed rates to the single rate. A Pi 4 gives about 4; a shared 2-vCPU VM may give 1.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

WORKER = """
import sys, time
from edgedetect.detect.runtime import load_interpreter
interp = load_interpreter(sys.argv[1], 1)
start, seconds = float(sys.argv[2]), float(sys.argv[3])
while time.time() < start:
    time.sleep(0.005)
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    interp.invoke()
    n += 1
print(n / (time.perf_counter() - t0))
"""


def _rates(model: Path, copies: int, seconds: float) -> list[float]:
    start = time.time() + 1.5  # all copies loaded before any starts counting
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(model), str(start), str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(copies)]
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=seconds + 60)
        out.append(float(text.strip().splitlines()[-1]))
    return out


def effective_cores(model: Path, cores: int, seconds: float = 2.0) -> dict[str, float]:
    alone = _rates(model, 1, seconds)[0]
    together = _rates(model, cores, seconds) if cores > 1 else [alone]
    return {
        "cores": cores,
        "invoke_fps_alone": round(alone, 1),
        "invoke_fps_each_together": round(sum(together) / len(together), 1),
        "effective_cores": round(sum(together) / alone, 2),
    }
