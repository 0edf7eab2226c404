#!/usr/bin/env python3
"""Count the events the tracker makes of a clip, as the daemon would: the real detector on every
frame, its detections (score >= [detect] threshold) fed to the tracker with the frames' capture
times.

Three runs: every frame (the clip's rate, 10 fps for vtest.avi), every second frame (5 fps), and
the clip mirrored left to right. Per run it prints the events started per label and, given the
clip's MOTChallenge ground truth (`--gt`, e.g. MOT15's PETS09-S2L1/gt/gt.txt for vtest.avi, which
is that sequence's view 1), per walker: the person events that followed them, whether anyone in
view for `--min-seen` s never got one, and IDF1, ID switches and MOTA (with motmetrics installed:
pip install -e '.[measure]').

The detector's output is cached per clip and direction (`--cache`), down to `LOW_FLOOR`, so
tracker settings re-run in seconds:

    scripts/count_events.py --gt /path/to/PETS09-S2L1/gt/gt.txt
    scripts/count_events.py --set max_lost_s=2 --set min_hits=5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgedetect.config import Config  # noqa: E402
from edgedetect.frames import Detection  # noqa: E402
from edgedetect.tracking.tracker import Tracker, TrackerConfig, iou  # noqa: E402

SHARED = ROOT.parent / "shared"
LOW_FLOOR = 0.1  # lowest score cached; a tracker may read detections down to its own low score
GT_IOU = 0.5  # overlap for a tracked box to count as a walker's (MOTChallenge's usual)


@dataclasses.dataclass
class Clip:
    """The detector's findings on every frame of one clip, one direction."""

    fps: float
    size: tuple[int, int]  # width, height
    frames: list[list[Detection]]  # every frame, scores down to LOW_FLOOR


def detect_clip(video: Path, model_path: Path, labels_path: Path, mirror: bool) -> Clip:
    import cv2

    from edgedetect.detect.families import load_model
    from edgedetect.detect.model import DetectFilter

    model = load_model(model_path, labels_path, threads=2)
    flt = DetectFilter(threshold=LOW_FLOOR, max_detections=100)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"count_events: {video}: cannot be opened as a video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    frames: list[list[Detection]] = []
    size = (0, 0)
    while True:
        ok, img = cap.read()
        if not ok:
            break
        size = (img.shape[1], img.shape[0])
        if mirror:
            img = cv2.flip(img, 1)
        frames.append(list(model.run(img, flt, bgr=True).detections))
    cap.release()
    return Clip(fps, size, frames)


def cached_clip(video: Path, model_path: Path, labels_path: Path, mirror: bool, cache: Path) -> Clip:
    path = cache / f"{video.stem}-{model_path.stem}-{'mirrored' if mirror else 'plain'}.npz"
    if path.exists():
        z = np.load(path)
        frames: list[list[Detection]] = [[] for _ in range(int(z["count"]))]
        for i, cid, label, score, box in zip(z["frame"], z["class_id"], z["label"], z["score"], z["box"]):
            frames[int(i)].append(Detection(int(cid), str(label), float(score), tuple(float(v) for v in box)))
        return Clip(float(z["fps"]), (int(z["size"][0]), int(z["size"][1])), frames)
    clip = detect_clip(video, model_path, labels_path, mirror)
    rows = [(i, d) for i, f in enumerate(clip.frames) for d in f]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, count=len(clip.frames), fps=clip.fps, size=np.array(clip.size),
             frame=np.array([i for i, _ in rows], dtype=np.int32),
             class_id=np.array([d.class_id for _, d in rows], dtype=np.int32),
             label=np.array([d.label for _, d in rows], dtype=str),
             score=np.array([d.score for _, d in rows], dtype=np.float32),
             box=np.array([d.box for _, d in rows], dtype=np.float64).reshape(-1, 4))
    return clip


def read_gt(path: Path, size: tuple[int, int], mirror: bool) -> dict[int, dict[int, tuple]]:
    """MOTChallenge gt.txt -> frame index (from 0) -> walker id -> normalised box. Rows flagged 0
    (not to be evaluated) are left out."""
    out: dict[int, dict[int, tuple]] = defaultdict(dict)
    w, h = size
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        f = line.split(",")
        try:
            frame, ident, x, y, bw, bh, flag = int(f[0]), int(f[1]), *map(float, f[2:6]), int(float(f[6]))
        except (ValueError, IndexError):
            raise SystemExit(f"count_events: {path}:{n}: expected frame,id,x,y,w,h,flag,... "
                             f"(MOTChallenge gt.txt), got {line[:60]!r}") from None
        if flag == 0:
            continue
        if mirror:
            x = w - x - bw
        out[frame - 1][ident] = (x / w, y / h, (x + bw) / w, (y + bh) / h)
    return out


def pairs(gt: dict[int, tuple], hyp: dict[int, tuple]) -> Iterator[tuple[int, int]]:
    """Walker and track ids whose boxes overlap by GT_IOU or more, best overlap first, each once."""
    scored = sorted(((iou(g, b), gi, hi) for gi, g in gt.items() for hi, b in hyp.items()), reverse=True)
    used_g: set[int] = set()
    used_h: set[int] = set()
    for o, gi, hi in scored:
        if o < GT_IOU:
            break
        if gi not in used_g and hi not in used_h:
            used_g.add(gi)
            used_h.add(hi)
            yield gi, hi


def run(clip: Clip, cfg: TrackerConfig, threshold: float, step: int,
        low_score: float | None) -> tuple[Tracker, dict[int, dict[int, tuple]]]:
    """The tracker over every `step`th frame; the started objects matched in each frame fed.
    With `low_score`, the detections from it up to the threshold go to the tracker as `low`."""
    tracker = Tracker(cfg)
    seen: dict[int, dict[int, tuple]] = {}
    for i in range(0, len(clip.frames), step):
        found = clip.frames[i]
        low = [d for d in found if low_score is not None and low_score <= d.score < threshold]
        tracker.update([d for d in found if d.score >= threshold], i / clip.fps, i, low)
        seen[i] = {tr.seq: tr.box for tr in tracker.tracks if tr.started and tr.last_frame == i and tr.misses == 0}
    tracker.flush()
    return tracker, seen


def score_against(gt: dict[int, dict[int, tuple]], seen: dict[int, dict[int, tuple]], dt: float,
                  min_seen: float) -> dict[str, Any]:
    """`seen`: the tracker's started objects in each frame fed, `dt` seconds apart."""
    frames_of: Counter[int] = Counter()
    events_of: dict[int, set[int]] = defaultdict(set)
    for i, hyp in seen.items():
        for gi in gt.get(i, {}):
            frames_of[gi] += 1
        for gi, hi in pairs(gt.get(i, {}), hyp):
            events_of[gi].add(hi)
    long_seen = [gi for gi, n in frames_of.items() if n * dt >= min_seen]
    out: dict[str, Any] = {
        "walkers": len(frames_of),
        "events_per_walker": sum(len(events_of[gi]) for gi in frames_of) / max(len(frames_of), 1),
        "unseen": sorted(gi for gi in long_seen if not events_of[gi]),
        "most_events": max(((len(events_of[gi]), gi) for gi in frames_of), default=(0, 0)),
    }
    try:
        import motmetrics as mm
    except ImportError:
        return out
    acc = mm.MOTAccumulator(auto_id=True)
    for i, hyp in sorted(seen.items()):
        g = gt.get(i, {})

        def xywh(boxes: list[tuple]) -> np.ndarray:
            a = np.array(boxes, dtype=float).reshape(-1, 4)
            return np.c_[a[:, :2], a[:, 2:] - a[:, :2]]

        dist = mm.distances.iou_matrix(xywh(list(g.values())), xywh(list(hyp.values())), max_iou=1 - GT_IOU)
        acc.update(list(g), list(hyp), dist)
    m = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches", "mota", "num_fragmentations"],
                                    name="run")
    out.update({k: float(m[k].iloc[0]) for k in ("idf1", "num_switches", "mota", "num_fragmentations")})
    return out


def parse_sets(items: list[str]) -> dict[str, Any]:
    names = {f.name: f for f in dataclasses.fields(TrackerConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in names or key == "labels":
            raise SystemExit(f"count_events: --set {item!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(n for n in names if n != 'labels')}")
        try:
            out[key] = type(getattr(TrackerConfig(), key))(value)
        except ValueError:
            raise SystemExit(f"count_events: --set {item!r}: expected {'an integer' if isinstance(getattr(TrackerConfig(), key), int) else 'a number'}"
                             " value") from None
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", type=Path, default=SHARED / "media" / "vtest.avi")
    p.add_argument("--model", type=Path,
                   default=SHARED / "models" / "ssd_mobilenet_v2_coco_quant_postprocess.tflite")
    p.add_argument("--labels", type=Path, default=SHARED / "models" / "coco_labels.txt")
    p.add_argument("--gt", type=Path, help="the clip's MOTChallenge gt.txt (walker boxes per frame)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/edgedetect-count-events"))
    p.add_argument("--label", default="person", help="the label whose events are counted")
    p.add_argument("--min-seen", type=float, default=2.0, help="seconds in view after which a walker needs an event")
    p.add_argument("--low-score", type=float, default=Config().track.low_score,
                   help="also pass the tracker the detections from this score up to the threshold, as the "
                        "daemon does ([track] low_score; at or above the threshold: none)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a TrackerConfig field")
    args = p.parse_args()
    for path in (args.video, args.model, args.labels, args.gt):
        if path is not None and not path.is_file():
            raise SystemExit(f"count_events: {path}: no such file")
    try:
        cfg = TrackerConfig(frozenset({args.label}), **parse_sets(args.set))
    except ValueError as e:
        raise SystemExit(f"count_events: --set: {e}") from None
    threshold = Config().detect.threshold
    if args.low_score < LOW_FLOOR:
        raise SystemExit(f"count_events: --low-score {args.low_score}: expected {LOW_FLOOR} or more")
    if args.low_score >= threshold:
        args.low_score = None
    print(f"{args.video.name}: {cfg}, detect threshold {threshold}, low score {args.low_score}")
    for name, mirror, step in (("every frame", False, 1), ("every second frame", False, 2), ("mirrored", True, 1)):
        clip = cached_clip(args.video, args.model, args.labels, mirror, args.cache)
        tracker, seen = run(clip, cfg, threshold, step, args.low_score)
        line = f"{name:>19} ({clip.fps / step:g} fps): {tracker.started[args.label]} {args.label} events"
        if args.gt is not None:
            s = score_against(read_gt(args.gt, clip.size, mirror), seen, step / clip.fps, args.min_seen)
            line += (f", {s['walkers']} walkers, {tracker.started[args.label] / max(s['walkers'], 1):.2f} events"
                     f" a walker (a walker's box matched {s['events_per_walker']:.2f} event ids on average,"
                     f" walker {s['most_events'][1]} {s['most_events'][0]}), in view >= {args.min_seen:g} s without an event:"
                     f" {s['unseen'] or 'none'}")
            if "idf1" in s:
                line += (f"; IDF1 {s['idf1']:.3f}, ID switches {s['num_switches']:.0f},"
                         f" fragmentations {s['num_fragmentations']:.0f}, MOTA {s['mota']:.3f}")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
