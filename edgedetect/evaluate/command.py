"""`edgedetect eval`: how accurate each model is on your own labelled pictures, beside its speed.

    edgedetect eval --data DIR --model A [--model B ...] [--plot pr.png] [--save-detections DIR]

Ctrl-C stops after the picture in hand and reports the pictures done (exit status 130); a
second Ctrl-C ends at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

from edgedetect.errors import UserError

log = logging.getLogger("edgedetect.evaluate")

MIN_SCORE = (0.001, 0.05)  # low enough for the whole precision-recall curve, high enough to stay quick


@contextlib.contextmanager
def stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """SIGINT sets `stop` (the run ends after its current picture) and gives the handler back, so
    that a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(_signum: int, _frame: Any) -> None:
        if not stop.is_set():
            log.warning("interrupted: scoring the pictures done so far (Ctrl-C again to quit at once)")
        stop.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def slugs(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
        slug, n = base, 1
        while slug in out:
            n += 1
            slug = f"{base}-{n}"
        out.append(slug)
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    from edgedetect import config
    from edgedetect.detect.catalogue import Catalogue
    from edgedetect.detect.runtime import default_threads
    from edgedetect.evaluate import coco, infer, labelmap, report, scoring
    from edgedetect.evaluate.formats import read_dataset
    from edgedetect.evaluate.progress import ProgressBar

    scoring.library()  # the missing extra is one line before anything slow
    if not MIN_SCORE[0] <= args.min_score <= MIN_SCORE[1]:
        raise UserError(f"--min-score: expected a value from {MIN_SCORE[0]:g} to {MIN_SCORE[1]:g}, got {args.min_score:g}")
    maps = labelmap.parse_maps(args.map or [])
    cfg = config.load(args.config, {"detect.threshold": args.threshold, "model.threads": args.threads,
                                    "model.models_dir": args.models_dir})
    data = read_dataset(args.data, args.format)
    catalogue = Catalogue.load(cfg.model.models_dir or None)
    threads = cfg.model.threads or default_threads()
    candidates = [infer.load(spec, cfg.model, catalogue, args.labels or "", threads) for spec in args.model or [cfg.model.path]]
    plans = [labelmap.plan(data.names, c.model.labels.values(), maps) for c in candidates]
    for c, plan in zip(candidates, plans):
        if plan.left_out:
            hint = "it has no labels: give --labels FILE" if not c.model.labels else "name its label with --map NAME=LABEL"
            log.warning("%s cannot produce %s; left out of its scores (%s)", c.name, ", ".join(plan.left_out), hint)

    stop = threading.Event()
    bar = ProgressBar()
    try:
        with stop_on_interrupt(stop):
            log.info("scoring %d pictures with %s", len(data.samples), ", ".join(c.name for c in candidates))
            outcome = infer.run(candidates, data.samples, infer.eval_filter(args.min_score, cfg.detect.iou), stop, bar)
    finally:
        bar.close()

    out: dict[str, Any] = {
        "data": str(data.root), "format": data.format, "images": len(data.samples) + data.malformed,
        "scored_images": len(outcome.done), "interrupted": outcome.stopped, "unlabelled": data.unlabelled,
        "malformed": data.malformed, "orphans": data.orphans, "unreadable": outcome.unreadable,
        "min_score": args.min_score, "threshold": cfg.detect.threshold, "library": scoring.library_version(),
        "models": [],
    }
    save = Path(args.save_detections) if args.save_detections else None
    for c, plan, slug in zip(candidates, plans, slugs([c.name for c in candidates])):
        gt = coco.ground_truth(outcome.done, plan.rename, data.root)
        found = coco.results(c.results, gt)
        entry = report.model_entry(c.describe(), scoring.score(gt, found, cfg.detect.threshold), plan)
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            entry["saved"] = {"detections": str(save / f"{slug}.detections.json"),
                              "ground_truth": str(save / f"{slug}.ground_truth.json")}
            Path(entry["saved"]["detections"]).write_text(json.dumps(found), encoding="utf-8")
            Path(entry["saved"]["ground_truth"]).write_text(json.dumps(gt), encoding="utf-8")
        out["models"].append(entry)
    if args.plot:
        from edgedetect.evaluate.plot import plot

        plot(out, Path(args.plot))
    if args.json:
        print(json.dumps(out))
    elif args.markdown:
        print(report.markdown(out))
    else:
        print(report.table(out))
    return 130 if outcome.stopped else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="accuracy (COCO mAP) and speed of models on your own labelled pictures "
                                           "(needs edgedetect[eval])")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="labelled pictures: Pascal VOC .xml (LabelImg), YOLO .txt with classes.txt or data.yaml, "
                        "or COCO .json (a folder, or the .json file)")
    p.add_argument("--model", action="append", metavar="NAME|FILE",
                   help="catalogue name or .tflite file; repeat to compare (default: the config's [model] path)")
    p.add_argument("--format", default="auto", choices=["auto", "voc", "yolo", "coco"], help="label format (default: found)")
    p.add_argument("--labels", metavar="FILE", help="labels file for models that have none of their own")
    p.add_argument("--map", action="append", metavar="OLD=NEW",
                   help="score the labels' class OLD as the model's NEW (VOC's aeroplane, diningtable, motorbike, "
                        "pottedplant, sofa and tvmonitor are mapped to COCO's names already)")
    p.add_argument("--threshold", type=float,
                   help="score threshold for precision and recall (default: [detect] threshold, 0.5)")
    p.add_argument("--min-score", type=float, default=MIN_SCORE[0],
                   help=f"lowest score kept for the mAP ({MIN_SCORE[0]:g} to {MIN_SCORE[1]:g}, default {MIN_SCORE[0]:g})")
    p.add_argument("--threads", type=int, help="interpreter threads (default: [model] threads, else all cores but one); "
                                               "invoke times are given at this and at 1")
    p.add_argument("--models-dir", help="':'-separated mirror directories of model files")
    p.add_argument("--config", "-c", help="TOML config ([detect] threshold and iou, [model] threads)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--plot", metavar="FILE.png", help="draw precision-recall curves, one a model")
    p.add_argument("--save-detections", metavar="DIR",
                   help="write each model's detections (COCO results JSON) and the ground truth they were scored "
                        "against (COCO annotation JSON) into DIR")
    p.set_defaults(func=cmd_eval)
