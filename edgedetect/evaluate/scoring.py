"""Scores from COCO's own evaluation (pycocotools, the `eval` extra), never a re-implementation.

mAP@0.5:0.95, mAP@0.5 and AP per class are the library's (101-point interpolation, COCO's area
ranges, at most 100 detections an image). Precision and recall at a score threshold, and the
threshold with the best F1, come from the library's own matching at IoU 0.5 (`evalImgs`: which
detection it matched to which object, which it ignored), pooled over the classes scored.

The ground truth and the detections are handed over as COCO objects built here, not through
`loadRes`, which fails on an empty list (a model that found nothing, or a run stopped before
its first picture).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedetect.errors import UserError

INSTALL = "pip install 'edgedetect[eval]'"
LIBRARIES = {"pycocotools": ("pycocotools.coco", "pycocotools.cocoeval", "COCOeval"),
             "faster-coco-eval": ("faster_coco_eval", "faster_coco_eval", "COCOeval_faster")}


def library(name: str = "pycocotools") -> tuple[Any, Any]:
    """(COCO, COCOeval) of the named library; a one-line UserError saying how to install it."""
    import importlib

    coco_mod, eval_mod, eval_cls = LIBRARIES[name]
    try:
        return importlib.import_module(coco_mod).COCO, getattr(importlib.import_module(eval_mod), eval_cls)
    except ImportError:
        raise UserError(f"edgedetect eval needs {name}, which is not installed: {INSTALL}") from None


def library_version(name: str = "pycocotools") -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


@dataclass(frozen=True, slots=True)
class ClassScore:
    name: str
    objects: int  # boxes of this class that count (crowd and difficult ones do not)
    ap: float | None
    ap50: float | None


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """What a score threshold gives: the detections kept are those scoring at least `threshold`."""

    threshold: float
    precision: float | None  # None: nothing scored that high
    recall: float | None  # None: no object to find
    f1: float | None


@dataclass(frozen=True)
class Scores:
    map: float | None  # None: no object of a scored class in the pictures
    map50: float | None
    classes: tuple[ClassScore, ...]
    curve: tuple[float, ...]  # precision at recall 0, 0.01 .. 1 (IoU 0.5), the mean over the classes
    at_threshold: OperatingPoint
    best_f1: OperatingPoint | None
    stats: tuple[float, ...]  # COCO's twelve summary numbers, as the library gives them
    detections: int


def coco_object(coco_cls: Any, doc: dict) -> Any:
    obj = coco_cls()
    obj.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):  # the library prints its progress
        obj.createIndex()
    return obj


def results_doc(gt: dict, results: list[dict]) -> dict:
    """Detections as a COCO object's dataset, with what `loadRes` would add: id, area, iscrowd."""
    anns = [{**r, "id": i, "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0} for i, r in enumerate(results, start=1)]
    return {"images": gt["images"], "categories": gt["categories"], "annotations": anns}


def evaluate(gt: dict, results: list[dict], name: str = "pycocotools") -> Any:
    """The library's evaluator, run: evaluate, accumulate, summarize."""
    coco_cls, eval_cls = library(name)
    truth = coco_object(coco_cls, gt)
    found = coco_object(coco_cls, results_doc(gt, results))
    ev = eval_cls(truth, found, "bbox")
    ev.params.imgIds = sorted(truth.getImgIds())
    ev.params.catIds = sorted(truth.getCatIds())
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def matches(ev: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, matched) of every detection that counts at IoU 0.5, all areas, and the number of
    objects to find: from pycocotools' per-image results, its own greedy matching."""
    p = ev.params
    if not math.isclose(float(p.iouThrs[0]), 0.5):
        raise ValueError("the first IoU threshold must be 0.5")
    areas, images = len(p.areaRng), len(p.imgIds)
    scores, hits, objects = [], [], 0
    for k in range(len(p.catIds)):
        for i in range(images):
            e = ev.evalImgs[k * areas * images + i]  # area range 0: all
            if e is None:
                continue
            objects += int(np.count_nonzero(~np.asarray(e["gtIgnore"], bool)))
            counted = ~np.asarray(e["dtIgnore"], bool).reshape(len(p.iouThrs), -1)[0]
            scores.append(np.asarray(e["dtScores"], float)[counted])
            hits.append(np.asarray(e["dtMatches"]).reshape(len(p.iouThrs), -1)[0][counted] > 0)
    if not scores:
        return np.empty(0), np.empty(0, bool), objects
    return np.concatenate(scores), np.concatenate(hits), objects


def _point(threshold: float, tp: int, kept: int, objects: int) -> OperatingPoint:
    precision = tp / kept if kept else None
    recall = tp / objects if objects else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return OperatingPoint(threshold, precision, recall, f1)


def operating_points(scores: np.ndarray, hits: np.ndarray, objects: int,
                     threshold: float) -> tuple[OperatingPoint, OperatingPoint | None]:
    """Precision and recall at `threshold`, and at the threshold with the best F1 (the highest
    such threshold when several tie: fewer detections for the same F1)."""
    order = np.argsort(-scores, kind="mergesort")
    s, cum = scores[order], np.cumsum(hits[order])
    kept = int(np.count_nonzero(s >= threshold))
    at = _point(threshold, int(cum[kept - 1]) if kept else 0, kept, objects)
    if not s.size or not objects:
        return at, None
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # each distinct score's last detection
    tp = cum[ends]
    f1 = 2 * tp / (ends + 1 + objects)  # 2PR/(P+R) with P = tp/kept, R = tp/objects
    best = int(np.argmax(f1))
    return at, _point(float(s[ends[best]]), int(tp[best]), int(ends[best]) + 1, objects)


def _mean(values: np.ndarray) -> float | None:
    v = values[values > -1]
    return float(v.mean()) if v.size else None


def score(gt: dict, results: list[dict], threshold: float) -> Scores:
    """Everything the report says of one model's detections against `gt` (a COCO dataset dict)."""
    ev = evaluate(gt, results)
    precision = ev.eval["precision"]  # [IoU, recall, class, area, max detections]
    counted: dict[int, int] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd"):
            counted[a["category_id"]] = counted.get(a["category_id"], 0) + 1
    names = {c["id"]: c["name"] for c in gt["categories"]}
    classes = []
    for k, cat in enumerate(ev.params.catIds):
        if counted.get(cat):
            classes.append(ClassScore(names[cat], counted[cat], _mean(precision[:, :, k, 0, -1]),
                                      _mean(precision[0, :, k, 0, -1])))
    at50 = precision[0, :, :, 0, -1]
    present = at50[:, (at50 > -1).all(axis=0)]
    curve = tuple(float(x) for x in present.mean(axis=1)) if present.size else ()
    at, best = operating_points(*matches(ev), threshold)
    stats = tuple(float(x) for x in ev.stats)
    return Scores(stats[0] if stats[0] >= 0 else None, stats[1] if stats[1] >= 0 else None, tuple(classes),
                  curve, at, best, stats, len(results))
