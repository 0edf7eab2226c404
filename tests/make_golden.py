"""Measures the golden results the model tests compare against, for this machine's architecture.

    python tests/make_golden.py      # writes tests/golden/detections.<machine>.json

Run once per architecture and commit the file: the x86-64 and aarch64 builds of the runtime use
different integer kernels, and their scores differ by a few hundredths on some objects.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
IMAGES = ["kite_and_cold.jpg", "pets.jpg", "grace_hopper.bmp"]


def measure() -> dict:
    from edgedetect.detect.families import load_model
    from edgedetect.detect.model import DetectFilter

    models = SHARED / "models"
    media = SHARED / "media"
    det = load_model(models / "ssd_mobilenet_v2_coco_quant_postprocess.tflite", models / "coco_labels.txt", 1)
    out: dict = {}
    for name in IMAGES:
        found = det.run(cv2.imread(str(media / name)), DetectFilter(threshold=0.5))
        out[name] = [{"label": d.label, "score": round(d.score, 4), "box": [round(x, 4) for x in d.box]}
                     for d in found.detections]
    cls = load_model(models / "mobilenet_v2_1.0_224_quant.tflite", models / "imagenet_labels.txt", 1)
    top = cls.run(cv2.imread(str(media / "cat.bmp")), DetectFilter(threshold=0.0), top_k=3).classes
    out["cat.bmp"] = [{"label": c.label, "score": round(c.score, 4), "class_id": c.class_id} for c in top]
    return out


if __name__ == "__main__":
    path = HERE / "golden" / f"detections.{platform.machine()}.json"
    path.write_text(json.dumps(measure(), indent=1) + "\n")
    print(path)
