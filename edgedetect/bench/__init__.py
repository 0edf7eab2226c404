"""`edgedetect bench`: how close the daemon comes to the model's own speed, on the same frames.

For each interpreter thread count it measures, in interleaved rounds so that a change in the
machine's load hits every figure alike:

- raw_invoke_fps: `invoke()` alone on one preloaded input, the ceiling;
- naive_fps: one thread reads, converts, resizes, invokes, draws and JPEG-encodes each frame in
  turn (the usual tutorial loop, done correctly: one interpreter, made once);
- pipeline_fps: the daemon's own classes (CaptureThread -> LatestSlot -> InferenceWorker ->
  Publisher) on the unpaced source, with one viewer thread doing exactly what the HTTP stream
  does (`wait_newer` + `jpeg()`), counted as JPEGs delivered to that viewer per second;
- then, with the source paced at its own rate, capture-to-publish latency percentiles.

`--memory` runs the pipeline for `--frames` frames and reports RSS after warm-up and at the end;
`--gating` compares process CPU on a still clip with motion gating off and on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from edgedetect.bench.cpucheck import effective_cores
from edgedetect.bench.measure import (
    ROUNDS,
    Setup,
    bench_threads,
    gating,
    memory_soak,
    peak_rss_mb,
    several_cameras,
)
from edgedetect.bench.report import choose, table
from edgedetect.config import ModelConfig, SourceConfig
from edgedetect.detect.catalogue import Catalogue
from edgedetect.detect.resolve import resolve_model
from edgedetect.detect.runtime import default_threads
from edgedetect.errors import UserError

__all__ = ["ROUNDS", "auto_candidates", "choose", "choose_default_threads", "parse_threads", "register",
           "run_bench", "table"]


def parse_threads(spec: str, cores: int | None = None) -> list[int] | None:
    """`auto` (None: try 1..cores and pick the best) or a comma-separated list."""
    if spec.strip().lower() == "auto":
        return None
    try:
        out = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--threads: expected auto or numbers like 1,2, got {spec!r}") from None
    if not out or any(n < 1 or n > 64 for n in out):
        raise UserError(f"--threads: expected auto or numbers from 1 to 64, got {spec!r}")
    return sorted(set(out))


def auto_candidates(cores: int | None = None) -> list[int]:
    n = cores or os.cpu_count() or 1
    return list(range(1, n + 1))


# --- the measured stages ---------------------------------------------------------------------


def run_bench(model: str = "ssd-mobilenet-v2-coco", source: str = "demo", threads: str = "auto",
              frames: int = 300, latency_seconds: float = 6.0, labels: str = "", models_dir: str = "",
              memory: bool = False, gating_seconds: float = 0.0, cameras: int = 0, cameras_seconds: float = 10.0,
              progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Everything `edgedetect bench` measures, as one dict (also the --json output)."""
    if frames < 1:
        raise UserError(f"--frames: expected a positive number, got {frames}")
    catalogue = Catalogue.load(models_dir or None)
    mc = ModelConfig(path=model, labels=labels, models_dir=models_dir)
    files = resolve_model(mc, catalogue)
    setup = Setup(mc, files, SourceConfig(uri=source), catalogue)
    tried = parse_threads(threads)
    auto = tried is None
    candidates = auto_candidates() if auto else tried
    report: dict[str, Any] = {
        "model": files.name,
        "source": source,
        "cpu_count": os.cpu_count(),
        "threads_mode": "auto" if auto else threads,
    }
    if memory:
        n = candidates[0] if len(candidates) == 1 else choose_default_threads()
        report["memory"] = memory_soak(setup, n, frames, progress)
        report["threads"] = n
        return report
    if gating_seconds > 0:
        n = candidates[0] if len(candidates) == 1 else choose_default_threads()
        report["gating"] = gating(setup, n, gating_seconds, progress)
        report["threads"] = n
        return report
    if cameras > 0:
        n = candidates[0] if len(candidates) == 1 else choose_default_threads()
        report["cameras"] = several_cameras(setup, n, cameras, cameras_seconds, progress)
        report["threads"] = n
        return report
    progress("parallel capacity: one invoke loop alone, then one per core side by side")
    report["parallel"] = effective_cores(files.model, os.cpu_count() or 1)
    runs = [bench_threads(setup, n, frames, latency_seconds, progress) for n in candidates]
    best = choose(runs)
    report.update(best)
    # With one core's worth of capacity, stages cannot overlap: a frame costs the sum of them.
    stages = best["stage_ms"]
    serial_ms = sum(stages.values())
    report["parallel"]["serial_ceiling_pipeline_vs_raw"] = round(stages["invoke"] / serial_ms, 3) if serial_ms else None
    report["rss_mb"] = {"peak": round(peak_rss_mb(), 1), "steady": best["rss_steady_mb"]}
    report["threads_tried"] = candidates
    report["per_threads"] = {str(r["threads"]): r for r in runs}
    return report


def choose_default_threads(cores: int | None = None) -> int:
    """What `auto` settles on when it does not measure: the daemon's own default."""
    return default_threads(cores)


def cmd_bench(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        if not args.json:
            print(f"  {msg}", file=sys.stderr, flush=True)

    # Each measured pipeline opens the source again: "source X: running" every time. The level is
    # put back afterwards, since the logger outlives the command (tests run it in-process).
    capture_log = logging.getLogger("edgedetect.pipeline.capture")
    level = capture_log.level
    if not getattr(args, "debug", False):
        capture_log.setLevel(logging.WARNING)
    try:
        return _bench(args, progress)
    finally:
        capture_log.setLevel(level)


def _bench(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    report = run_bench(model=args.model, source=args.source, threads=args.threads, frames=args.frames,
                       latency_seconds=args.latency_seconds, labels=args.labels or "",
                       models_dir=args.models_dir or "", memory=args.memory,
                       gating_seconds=args.gating_seconds if args.gating else 0.0, cameras=args.cameras or 0,
                       cameras_seconds=args.cameras_seconds, progress=progress)
    if args.plot:
        from edgedetect.bench.plot import plot

        plot(report, Path(args.plot))
    if args.json:
        print(json.dumps(report))
    else:
        print(table(report))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure raw, naive and pipelined speed, latency, CPU and memory")
    p.add_argument("--model", default="ssd-mobilenet-v2-coco", help="catalogue name or .tflite file")
    p.add_argument("--labels", help="labels file")
    p.add_argument("--models-dir", help="':'-separated mirror directories of model files")
    p.add_argument("--source", default="demo", help="video, camera or stream to read (default: demo, vtest.avi)")
    p.add_argument("--threads", default="auto",
                   help="interpreter threads to measure, e.g. 1,2 (auto: 1..cores, best one reported)")
    p.add_argument("--frames", type=int, default=300, help="frames per measurement (default 300)")
    p.add_argument("--latency-seconds", type=float, default=6.0, help="length of the paced latency run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="draw the figures (needs matplotlib: edgedetect[plot])")
    p.add_argument("--memory", action="store_true", help="soak: run --frames frames, report RSS growth")
    p.add_argument("--gating", action="store_true", help="CPU on a still clip with motion gating off and on")
    p.add_argument("--gating-seconds", type=float, default=10.0, help="length of each gating run")
    p.add_argument("--cameras", type=int, metavar="N",
                   help="the source as N cameras sharing one detector, against one camera: rate, shares, latency, RSS")
    p.add_argument("--cameras-seconds", type=float, default=10.0, help="length of each --cameras run")
    p.set_defaults(func=cmd_bench)
