"""The measured runs: the interpreter alone, the naive one-thread loop, the daemon's pipeline
(unpaced and paced), the memory soak and the motion-gating comparison."""

from __future__ import annotations

import resource
import statistics
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import psutil

from edgedetect import clock
from edgedetect.bench.report import targets
from edgedetect.config import ONE_CAMERA, ModelConfig, MotionConfig, SourceConfig
from edgedetect.detect.catalogue import Catalogue
from edgedetect.detect.model import DetectFilter, Model
from edgedetect.detect.resolve import ModelFiles, load_configured
from edgedetect.errors import UserError
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.annotate import annotated
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import CameraSpec
from edgedetect.pipeline.motion import MotionGate
from edgedetect.pipeline.publish import Publisher
from edgedetect.sources import Source, make_source

JPEG_QUALITY = 80  # the [http] default
WARMUP_FRAMES = 8  # first invokes set up XNNPACK's thread pool and caches
ROUNDS = 5  # each of raw/naive/pipeline runs this many times, alternating; ratios per round
START_TIMEOUT_S = 30.0


def percentiles(values: list[float], ps: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    if not values:
        return {f"p{p}": 0.0 for p in ps}
    got = np.percentile(np.asarray(values, float), ps)
    return {f"p{p}": round(float(v), 2) for p, v in zip(ps, got)}


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the high-water mark of the whole process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CpuMeter:
    """Process CPU time over wall time, in percent of one core (200 = two cores busy)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._t0 = clock.now()
        self._c0 = self._cpu()

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def percent(self) -> float:
        wall = clock.now() - self._t0
        return 100.0 * (self._cpu() - self._c0) / wall if wall > 0 else 0.0


@dataclass
class Setup:
    model: ModelConfig
    files: ModelFiles
    source: SourceConfig  # the source as given; bench decides pace and loop per phase
    catalogue: Catalogue
    flt: DetectFilter = field(default_factory=DetectFilter)

    @property
    def model_path(self) -> Path:
        return self.files.model

    def load(self, threads: int) -> Model:
        return load_configured(self.model, self.files, threads)

    def source_for(self, model: Model, pace: bool, loop: bool = True) -> Source:
        cfg = SourceConfig(uri=self.source.uri, pace=pace, loop=loop, width=self.source.width,
                           height=self.source.height, fps=self.source.fps)
        return make_source(cfg, self.catalogue, model.input_size, model.keeps_aspect)


def first_frame(setup: Setup, model: Model) -> Frame:
    src = setup.source_for(model, pace=False)
    src.open()
    try:
        cap = src.read()
    finally:
        src.close()
    if cap is None:
        raise UserError(f"{setup.source.uri}: no frame to benchmark")
    return Frame(0, clock.now(), cap.image, cap.lores)


def raw_invoke(model: Model, frame: Frame, n: int) -> dict[str, float]:
    """The interpreter alone: one input set once, `n` invokes (detect's steps taken apart)."""
    model.prepare(frame)
    for _ in range(WARMUP_FRAMES):
        model.invoke()
    times = []
    cpu = CpuMeter()
    t0 = clock.now()
    for _ in range(n):
        t = clock.now()
        model.invoke()
        times.append(clock.now() - t)
    wall = clock.now() - t0
    return {"fps": n / wall, "invoke_ms": 1000 * statistics.median(times), "cpu": cpu.percent()}


STAGES = ("decode", "preprocess", "invoke", "postprocess", "annotate", "encode")


def naive_loop(setup: Setup, model: Model, n: int) -> dict[str, Any]:
    """One thread does everything per frame, in order: the baseline."""
    src = setup.source_for(model, pace=False)
    src.open()
    quality = [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY]
    sums = dict.fromkeys(STAGES, 0.0)
    try:
        for i in range(WARMUP_FRAMES + n):
            if i == WARMUP_FRAMES:
                sums = dict.fromkeys(STAGES, 0.0)
                cpu = CpuMeter()
                t_start = clock.now()
            t0 = clock.now()
            cap = src.read()
            if cap is None:
                raise UserError(f"{setup.source.uri}: source ended during the benchmark")
            t1 = clock.now()
            frame = Frame(i, t0, cap.image, cap.lores)
            t2 = clock.now()
            found = model.detect(frame, setup.flt, 3)
            result = Result(frame, found.detections, found.classes)
            t3 = clock.now()
            img = annotated(result, "naive")
            t4 = clock.now()
            ok, _buf = cv2.imencode(".jpg", img, quality)
            t5 = clock.now()
            # detect's own step times; the little it spends around them counts as postprocess.
            pre, invoke = found.times.preprocess_ms / 1000.0, found.times.invoke_ms / 1000.0
            for k, v in zip(STAGES, (t1 - t0, t2 - t1 + pre, invoke, t3 - t2 - pre - invoke, t4 - t3, t5 - t4)):
                sums[k] += v
        wall = clock.now() - t_start
    finally:
        src.close()
    return {
        "fps": n / wall,
        "frame_ms": 1000 * wall / n,
        "stage_ms": {k: 1000 * v / n for k, v in sums.items()},
        "cpu": cpu.percent(),
    }


class Viewer:
    """One MJPEG viewer, in-process: server.py's stream loop (Publisher.stream) without the socket."""

    def __init__(self, publisher: Publisher, stop: threading.Event, record: bool = True):
        self._pub = publisher
        self._stop = stop
        self._record = record  # keep each frame's time (off for the soak: a list would grow)
        self.count = 0
        self.times: list[float] = []
        self.new = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="bench-viewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        for _jpg in self._pub.stream(self._stop, poll_s=0.2):
            with self.new:
                self.count += 1
                if self._record:
                    self.times.append(clock.now())
                self.new.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.new:
            return self.new.wait_for(lambda: self.count >= count, timeout)


@dataclass
class PipelineRun:
    """The daemon's pipeline (the same builder), plus one viewer."""

    setup: Setup
    model: Model
    pace: bool
    viewer: bool = True
    gate: MotionGate | None = None
    record: bool = True  # keep a row per result (off for the soak)
    cameras: int = 1  # the same source as this many cameras, one detector

    def __post_init__(self) -> None:
        self.stop_event = threading.Event()
        # (t_publish, latency ms, inference ms, camera)
        self.published: list[tuple[float, float, float, str]] = []
        self.count = 0
        self._lock = threading.Lock()
        self._count = threading.Condition(self._lock)
        specs = []
        for i in range(self.cameras):
            src = self._source()
            src.open()
            specs.append(CameraSpec(f"cam{i + 1}" if self.cameras > 1 else ONE_CAMERA, self._source, src,
                                    self.gate))
        self.pipeline = Pipeline(self.model, specs, PipelineOptions(flt=self.setup.flt, report_sinks=()))
        self.pipeline.add_result_listener(self._on_result)
        self.stats = self.pipeline.camera().stats
        self.publisher = self.pipeline.camera().publisher
        self.view = Viewer(self.publisher, self.stop_event, self.record) if self.viewer else None

    def _source(self) -> Source:
        # Unpaced files are read only as fast as the worker takes frames: CaptureThread's pull mode.
        return self.setup.source_for(self.model, pace=self.pace)

    def _on_result(self, r: Result) -> None:
        t = clock.now()
        with self._count:
            self.count += 1
            if self.record:
                self.published.append((t, (t - r.frame.t_capture) * 1000.0, r.inference_ms, r.camera))
            self._count.notify_all()

    def start(self) -> None:
        if self.view:
            self.view.start()
        self.pipeline.start()

    def wait_published(self, count: int, timeout: float) -> bool:
        with self._count:
            return self._count.wait_for(lambda: self.count >= count, timeout)

    def window(self, seconds: float) -> tuple[list[tuple[float, float, float, str]], float, float, float]:
        """After the warm-up, `seconds` of running: (the rows published meanwhile, the seconds
        they took, process CPU % and RSS MB at the end)."""
        if not self.wait_published(WARMUP_FRAMES, START_TIMEOUT_S):
            raise UserError("bench: the pipeline produced no frames (see the log)")
        with self._lock:
            skip = len(self.published)
        cpu = CpuMeter()
        t0 = clock.now()
        self.stop_event.wait(seconds)
        cpu_pct, wall, rss = cpu.percent(), clock.now() - t0, rss_mb()
        with self._lock:
            return self.published[skip:], wall, cpu_pct, rss

    def stop(self) -> None:
        self.stop_event.set()
        self.pipeline.stop()
        self.pipeline.join(5.0)
        if self.view is not None:
            self.view.join(5.0)


def pipeline_unpaced(setup: Setup, model: Model, n: int) -> dict[str, Any]:
    run = PipelineRun(setup, model, pace=False)
    run.start()
    try:
        assert run.view is not None
        if not run.view.wait_for(WARMUP_FRAMES, START_TIMEOUT_S):
            raise UserError("bench: the pipeline produced no frames (see the log)")
        cpu = CpuMeter()
        start = run.view.times[WARMUP_FRAMES - 1]
        run.view.wait_for(WARMUP_FRAMES + n, START_TIMEOUT_S + n)
        times = run.view.times[WARMUP_FRAMES - 1:WARMUP_FRAMES + n]
        cpu_pct = cpu.percent()
        steady = rss_mb()
    finally:
        run.stop()
    delivered = len(times) - 1
    wall = times[-1] - start
    with run._lock:
        published = [p for p in run.published if start < p[0] <= times[-1]]
    return {
        "fps": delivered / wall if wall > 0 else 0.0,
        "published_fps": len(published) / wall if wall > 0 else 0.0,
        "encoded": run.publisher.encoded,
        "dropped": run.pipeline.camera().slot.dropped,
        "cpu": cpu_pct,
        "rss_mb": steady,
    }


def pipeline_paced(setup: Setup, model: Model, seconds: float) -> dict[str, Any]:
    """Source at its own frame rate, one viewer: latency and CPU as a user would see them."""
    run = PipelineRun(setup, model, pace=True)
    run.start()
    try:
        rows, wall, cpu_pct, _ = run.window(seconds)
    finally:
        run.stop()
    return {
        "fps": len(rows) / wall if wall > 0 else 0.0,
        "latency_ms": percentiles([r[1] for r in rows]),
        "invoke_ms": statistics.median([r[2] for r in rows]) if rows else 0.0,
        "frames": len(rows),
        "cpu": cpu_pct,
    }


def bench_threads(setup: Setup, threads: int, frames: int, latency_s: float,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    """All figures for one interpreter thread count."""
    model = setup.load(threads)
    frame = first_frame(setup, model)
    per_round = max(1, frames // ROUNDS)
    raws, naives, pipes = [], [], []
    for r in range(ROUNDS):
        progress(f"threads={threads} round {r + 1}/{ROUNDS}: raw")
        raws.append(raw_invoke(model, frame, per_round))
        progress(f"threads={threads} round {r + 1}/{ROUNDS}: naive")
        naives.append(naive_loop(setup, model, per_round))
        progress(f"threads={threads} round {r + 1}/{ROUNDS}: pipeline")
        pipes.append(pipeline_unpaced(setup, model, per_round))
    progress(f"threads={threads}: paced latency ({latency_s:g} s)")
    paced = pipeline_paced(setup, model, latency_s)

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    raw_fps, naive_fps, pipe_fps = med(raws, "fps"), med(naives, "fps"), med(pipes, "fps")
    stage_ms = {k: round(statistics.median(n["stage_ms"][k] for n in naives), 3) for k in STAGES}
    out: dict[str, Any] = {
        "threads": threads,
        "frames": per_round * ROUNDS,
        "raw_invoke_fps": round(raw_fps, 2),
        "naive_fps": round(naive_fps, 2),
        "pipeline_fps": round(pipe_fps, 2),
        "pipeline_published_fps": round(med(pipes, "published_fps"), 2),
        "naive_frame_ms": round(med(naives, "frame_ms"), 3),
        "raw_invoke_ms": round(med(raws, "invoke_ms"), 3),
        "stage_ms": stage_ms,
        "latency_ms": paced["latency_ms"],
        "paced_fps": round(paced["fps"], 2),
        "paced_invoke_ms": round(paced["invoke_ms"], 3),
        "cpu_percent": {
            "raw": round(med(raws, "cpu"), 1),
            "naive": round(med(naives, "cpu"), 1),
            "pipeline": round(med(pipes, "cpu"), 1),
            "paced": round(paced["cpu"], 1),
        },
        "rounds": {
            "raw_invoke_fps": [round(r["fps"], 2) for r in raws],
            "naive_fps": [round(r["fps"], 2) for r in naives],
            "pipeline_fps": [round(r["fps"], 2) for r in pipes],
        },
        "rss_steady_mb": round(statistics.median(p["rss_mb"] for p in pipes), 1),
    }
    out["targets"] = targets(out)
    return out


def memory_soak(setup: Setup, threads: int, frames: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """The pipeline with one viewer for `frames` frames (the source loops): RSS after warm-up
    and at the end."""
    model = setup.load(threads)
    warm = min(500, max(WARMUP_FRAMES, frames // 10))
    run = PipelineRun(setup, model, pace=False, record=False)
    run.start()
    samples: list[tuple[int, float]] = []
    try:
        assert run.view is not None
        if not run.view.wait_for(warm, START_TIMEOUT_S + warm):
            raise UserError("bench: the pipeline stalled during warm-up")
        after_warmup = rss_mb()
        t0 = clock.now()
        samples.append((warm, round(after_warmup, 2)))
        step = max(1, (frames - warm) // 10)
        target = warm
        while target < frames:
            target = min(frames, target + step)
            if not run.view.wait_for(target, 60.0 + step):
                raise UserError(f"bench: the pipeline stalled after {run.view.count} frames")
            samples.append((target, round(rss_mb(), 2)))
            progress(f"memory: {target}/{frames} frames, rss {samples[-1][1]:.1f} MB")
        wall = clock.now() - t0
        end = rss_mb()
    finally:
        run.stop()
    return {
        "threads": threads,
        "frames": frames,
        "warmup_frames": warm,
        "rss_after_warmup_mb": round(after_warmup, 2),
        "rss_end_mb": round(end, 2),
        "rss_growth_mb": round(end - after_warmup, 2),
        "rss_peak_mb": round(peak_rss_mb(), 2),
        "fps": round((frames - warm) / wall, 2) if wall > 0 else 0.0,
        "samples": samples,
    }


def write_still_clip(source: Source, path: Path, frames: int = 50) -> float:
    """A real video file of one frame repeated, at the source's own rate."""
    source.open()
    try:
        cap = source.read()
        fps = source.fps or 10.0
    finally:
        source.close()
    if cap is None:
        raise UserError("bench: no frame for the still clip")
    h, w = cap.image.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise UserError(f"bench: cannot write {path}")
    try:
        for _ in range(frames):
            writer.write(cap.image)
    finally:
        writer.release()
    return fps


def gating(setup: Setup, threads: int, seconds: float, progress: Callable[[str], None]) -> dict[str, Any]:
    """Process CPU on a still clip played at its own rate, gate off against gate on; then the
    moving source with the gate on, to show that motion is inferred."""
    model = setup.load(threads)
    out: dict[str, Any] = {"threads": threads, "seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="edgedetect-bench-") as tmp:
        still = Path(tmp) / "still.avi"
        write_still_clip(setup.source_for(model, pace=False, loop=False), still)
        still_setup = Setup(setup.model, setup.files, SourceConfig(uri=str(still)), setup.catalogue, setup.flt)
        for name, gate in (("off", None), ("on", MotionGate(MotionConfig()))):
            progress(f"gating {name}: still clip for {seconds:g} s")
            out[name] = _gated_run(still_setup, model, gate, seconds)
        progress(f"gating on: moving source for {seconds:g} s")
        out["motion_source"] = _gated_run(setup, model, MotionGate(MotionConfig()), seconds)
    off, on = out["off"]["cpu_percent"], out["on"]["cpu_percent"]
    out["cpu_reduction_pct"] = round(100.0 * (1 - on / off), 1) if off > 0 else 0.0
    return out


def _gated_run(setup: Setup, model: Model, gate: MotionGate | None, seconds: float) -> dict[str, Any]:
    run = PipelineRun(setup, model, pace=True, viewer=False, gate=gate)
    run.start()
    try:
        run.wait_published(3, START_TIMEOUT_S)
        inferred0, skipped0 = run.stats.inference.total, run.stats.skipped.total
        cpu = CpuMeter()
        run.stop_event.wait(seconds)
        cpu_pct = cpu.percent()
        inferred, skipped = run.stats.inference.total - inferred0, run.stats.skipped.total - skipped0
    finally:
        run.stop()
    res: dict[str, Any] = {
        "cpu_percent": round(cpu_pct, 1),
        "inferred_fps": round(inferred / seconds, 2),
        "skipped_fps": round(skipped / seconds, 2),
    }
    if gate is not None:
        res["motion"] = gate.figures()
    return res


def several_cameras(setup: Setup, threads: int, cameras: int, seconds: float,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    """The source as `cameras` cameras sharing one detector, against the one-camera pipeline in
    the same run. Rate, shares and RSS with unpaced files (each camera always has a frame ready:
    the detector is the bottleneck); latency with the files at their own rate, as cameras deliver
    (an unpaced file is read the moment its slot empties, so its frame waits a whole round of
    the other cameras by construction, and its latency says nothing of a camera's)."""
    model = setup.load(threads)
    out: dict[str, Any] = {"threads": threads, "cameras": cameras, "seconds": seconds}
    progress(f"1 camera, unpaced, for {seconds:g} s")
    one = out["one"] = _cameras_run(setup, model, 1, seconds, pace=False)
    progress(f"{cameras} cameras, unpaced, for {seconds:g} s")
    several = out["several"] = _cameras_run(setup, model, cameras, seconds, pace=False)
    progress(f"{cameras} cameras at their own rate, for {seconds:g} s")
    paced = out["paced"] = _cameras_run(setup, model, cameras, seconds, pace=True)
    out["throughput_ratio"] = round(several["fps"] / one["fps"], 3) if one["fps"] else 0.0
    out["share_spread"] = round(max(abs(v * cameras - 1) for v in several["shares"].values()), 3) \
        if several["shares"] else 0.0
    for name, run in (("latency_p50_invokes", paced), ("latency_p50_invokes_unpaced", several)):
        out[name] = round(run["latency_ms"].get("p50", 0.0) / run["invoke_ms"], 2) if run["invoke_ms"] else 0.0
    out["paced_load"] = round(paced["fps"] / one["fps"], 3) if one["fps"] else 0.0  # 1: the detector saturated
    out["rss_per_added_camera_mb"] = round((several["rss_mb"] - one["rss_mb"]) / (cameras - 1), 1) \
        if cameras > 1 else 0.0
    return out


def _cameras_run(setup: Setup, model: Model, n: int, seconds: float, pace: bool) -> dict[str, Any]:
    run = PipelineRun(setup, model, pace=pace, viewer=False, cameras=n)
    run.start()
    try:
        rows, wall, _, rss = run.window(seconds)
    finally:
        run.stop()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[3]] = counts.get(row[3], 0) + 1
    total = sum(counts.values())
    return {
        "fps": total / wall if wall > 0 else 0.0,
        "per_camera_fps": {k: round(v / wall, 2) for k, v in sorted(counts.items())},
        "shares": {k: round(v / total, 4) for k, v in sorted(counts.items())} if total else {},
        "latency_ms": percentiles([r[1] for r in rows]),
        "invoke_ms": statistics.median([r[2] for r in rows]) if rows else 0.0,
        "rss_mb": round(rss, 1),
    }


# --- the command -----------------------------------------------------------------------------
