"""What `edgedetect eval` reports: one dict (the --json output), and the same as a terminal
table or Markdown."""

from __future__ import annotations

import math
from typing import Any

from edgedetect.evaluate.labelmap import LabelPlan
from edgedetect.evaluate.scoring import OperatingPoint, Scores


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _floor(x: float, digits: int = 3) -> float:
    """A threshold shown so that setting it keeps the detections it was measured with."""
    return math.floor(x * 10**digits) / 10**digits


def _point(p: OperatingPoint | None, best: bool = False) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"threshold": _floor(p.threshold) if best else p.threshold, "precision": _r(p.precision),
            "recall": _r(p.recall), "f1": _r(p.f1)}


def model_entry(described: dict, scores: Scores, plan: LabelPlan) -> dict[str, Any]:
    return {**described,
            "map": _r(scores.map), "map50": _r(scores.map50),
            "at_threshold": _point(scores.at_threshold), "best_f1": _point(scores.best_f1, best=True),
            "classes": [{"name": c.name, "objects": c.objects, "ap": _r(c.ap), "ap50": _r(c.ap50)} for c in scores.classes],
            "left_out": list(plan.left_out), "mapped": dict(plan.mapped), "detections": scores.detections,
            "coco_stats": [_r(x) for x in scores.stats], "curve": [_r(x) for x in scores.curve]}


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _pr(p: dict | None) -> tuple[str, str]:
    return (_f(p["precision"]), _f(p["recall"])) if p else ("-", "-")


def _best(p: dict | None) -> str:
    if not p:
        return "-"
    return f"{_f(p['f1'])} at {p['threshold']:.3f} ({_f(p['precision'], '.2f')}/{_f(p['recall'], '.2f')})"


def _rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    models = report["models"]
    threads = sorted({int(k) for m in models for k in m["invoke_ms"]})
    t = report["threshold"]
    head = ["model", "mAP50-95", "mAP50", f"P@{t:g}", f"R@{t:g}", "best F1 at thr (P/R)",
            *[f"ms {n} thr" for n in threads], "MB", "input"]
    rows = []
    for m in models:
        p, r = _pr(m["at_threshold"])
        rows.append([m["model"], _f(m["map"]), _f(m["map50"]), p, r, _best(m["best_f1"]),
                     *[_f(m["invoke_ms"].get(str(n)), ".1f") for n in threads], f"{m['size_mb']:.2f}", m["input"]])
    return head, rows


def _class_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    models = report["models"]
    names: dict[str, int] = {}
    for m in models:
        for c in m["classes"]:
            names.setdefault(c["name"], c["objects"])
    head = ["class", "objects", *[f"{m['model']} AP50-95 / AP50" for m in models]]
    rows = []
    for name, objects in names.items():
        cells = []
        for m in models:
            c = next((c for c in m["classes"] if c["name"] == name), None)
            cells.append(f"{_f(c['ap'])} / {_f(c['ap50'])}" if c else "left out")
        rows.append([name, str(objects), *cells])
    return head, rows


def _summary(report: dict[str, Any]) -> list[str]:
    lines = [f"{report['scored_images']} of {report['images']} pictures scored ({report['format']}, {report['data']}); "
             f"{report['library']}; detections down to score {report['min_score']:g}"]
    if report["interrupted"]:
        lines.append(f"INTERRUPTED after {report['scored_images']} pictures: the figures are for those only")
    faults = [f"{report[k]} {what}" for k, what in (("malformed", "malformed label files left out"),
                                                   ("orphans", "label files without an image"),
                                                   ("unreadable", "unreadable pictures left out")) if report[k]]
    if faults:
        lines.append("; ".join(faults))
    for m in report["models"]:
        if m["left_out"]:
            lines.append(f"{m['model']} cannot produce {', '.join(m['left_out'])}: left out of its scores")
        if m["mapped"]:
            lines.append(f"{m['model']}: " + ", ".join(f"{a} scored as {b}" for a, b in m["mapped"].items()))
    return lines


def table(report: dict[str, Any]) -> str:
    def grid(head: list[str], rows: list[list[str]]) -> list[str]:
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        return [fmt(head), *(fmt(r) for r in rows)]

    lines = _summary(report) + [""] + grid(*_rows(report))
    head, rows = _class_rows(report)
    if rows:
        lines += ["", "AP per class:"] + grid(head, rows)
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    def grid(head: list[str], rows: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
                *("| " + " | ".join(r) + " |" for r in rows)]

    lines = grid(*_rows(report))
    head, rows = _class_rows(report)
    if rows:
        lines += [""] + grid(head, rows)
    return "\n".join(lines + [""] + [f"- {line}" for line in _summary(report)])
