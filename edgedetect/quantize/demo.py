"""The offline, reproducible demonstration: scikit-learn's digits -> image folders -> a
MobileNetV2 trained from scratch -> every variant -> the comparison table and plot.

    python -m edgedetect.quantize.demo OUTDIR [--size 64 --alpha 0.35 --epochs 20 ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgedetect.errors import UserError


@dataclass(frozen=True, slots=True)
class Splits:
    train: Path
    calibration: Path
    eval: Path
    counts: dict[str, int]


def make_digits_folders(root: Path, size: int, seed: int = 0, calibration: int = 200,
                        eval_fraction: float = 0.25) -> Splits:
    """Write the 1797 8x8 digits as size x size RGB PNGs into train/, calibration/ and eval/,
    each `<split>/<digit>/<n>.png`, stratified and disjoint."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise UserError("scikit-learn is not installed: pip install 'edgedetect[quantize]'") from None
    digits = load_digits()
    images = digits.images  # float 0..16, [1797, 8, 8]
    target = digits.target
    idx = np.arange(len(images))
    rest, ev = train_test_split(idx, test_size=eval_fraction, stratify=target, random_state=seed)
    tr, cal = train_test_split(rest, test_size=calibration, stratify=target[rest], random_state=seed)
    splits = {"train": tr, "calibration": cal, "eval": ev}
    for name, ids in splits.items():
        for i in ids:
            folder = root / name / str(int(target[i]))
            folder.mkdir(parents=True, exist_ok=True)
            grey = np.round(images[i] * (255.0 / 16.0)).astype(np.uint8)
            # Bilinear upscaling keeps the strokes smooth; the three channels are the same grey.
            big = cv2.resize(grey, (size, size), interpolation=cv2.INTER_LINEAR)
            cv2.imwrite(str(folder / f"{int(i):04d}.png"), cv2.merge([big, big, big]))
    return Splits(root / "train", root / "calibration", root / "eval",
                  {k: int(len(v)) for k, v in splits.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgedetect.quantize.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", type=Path)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--qat-epochs", type=int, default=3)
    p.add_argument("--calibration-count", type=int, default=200)
    p.add_argument("--io", default="uint8", choices=("uint8", "int8", "float32"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads for the timing (default 1)")
    args = p.parse_args(argv)
    try:
        return run_demo(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def run_demo(args: argparse.Namespace) -> int:
    from edgedetect.quantize import build
    from edgedetect.quantize.claims import check_claims, claims_markdown
    from edgedetect.quantize.compare import compare, write_report
    from edgedetect.quantize.pipeline import QuantizeOptions, run_quantize

    start = time.perf_counter()
    out: Path = args.outdir
    data = out / "digits"
    stamp = f"size={args.size} seed={args.seed} calibration={args.calibration_count}\n"
    if not (data / "made").is_file() or (data / "made").read_text() != stamp:
        shutil.rmtree(data, ignore_errors=True)  # images of another size or split: make them anew
        splits = make_digits_folders(data, args.size, args.seed, args.calibration_count)
        (data / "made").write_text(stamp)
        print(f"digits: {splits.counts} images of {args.size}x{args.size} in {data}")
    models = out / "models"
    cfg = build.TrainConfig(size=args.size, alpha=args.alpha, epochs=args.epochs, seed=args.seed)
    res = run_quantize(QuantizeOptions(
        out=models, train_dir=data / "train", calibration_dir=data / "calibration",
        calibration_count=args.calibration_count, io=args.io, qat_epochs=args.qat_epochs, train=cfg,
    ))
    print("produced: " + ", ".join(f"{k} ({v:.0f}s)" for k, v in res.seconds.items()))
    results = compare(models, data / "eval", threads=args.threads)
    table = write_report(results, models)
    n_eval = sum(1 for _ in (data / "eval").rglob("*.png"))
    claims = claims_markdown(check_claims(results, n_eval))
    (models / "claims.md").write_text(claims, encoding="utf-8")
    elapsed = time.perf_counter() - start
    summary = json.loads((models / "quantize.json").read_text())
    summary["demo_seconds"] = round(elapsed, 1)
    (models / "quantize.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)
    print(claims)
    print(f"demo finished in {elapsed:.0f}s: {models}/comparison.md, {models}/comparison.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
