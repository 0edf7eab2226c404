"""`edgedetect quantize` and `edgedetect compare`; importing this module needs no TensorFlow."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgedetect.quantize import VARIANTS

_QUANTIZE_HELP = """\
Make every variant of one Keras classifier, each as <variant>.tflite with <variant>_labels.txt:
  float32          the float model as it is
  dynamic          int8 weights, float activations (no data needed)
  float16          float16 weights
  int8             full integer, calibrated on --calibration, per-channel weight scales
  int8-per-tensor  the same with one scale per weight tensor
  qat              fine-tuned with simulated quantization (--qat-epochs), then full integer
Preprocessing everywhere is the daemon's: RGB, resized to the model's size, x/127.5-1.
Needs the optional extra: pip install 'edgedetect[quantize]'."""


def register(subparsers: Any) -> None:
    """Add `quantize` and `compare` to the main CLI's subparsers."""
    q = subparsers.add_parser(
        "quantize", help="make float32/dynamic/float16/int8/int8-per-tensor/qat .tflite variants",
        description=_QUANTIZE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("model", nargs="?", type=Path,
                   help="Keras model (.keras, .h5) or Keras SavedModel directory; omit with --train to build one")
    q.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    q.add_argument("--train", type=Path, metavar="DIR",
                   help="image folder, one sub-folder per class: trains a MobileNetV2 (without MODEL) "
                        "and fine-tunes the qat variant")
    q.add_argument("--calibration", type=Path, metavar="DIR",
                   help="images for full-integer calibration (flat or in sub-folders; default: --train)")
    q.add_argument("--calibration-count", type=int, default=200, metavar="N",
                   help="calibration images used (default 200)")
    q.add_argument("--labels", type=Path, metavar="FILE", help="class names for MODEL, one a line")
    q.add_argument("--io", choices=("uint8", "int8", "float32"), default="uint8",
                   help="input/output type of the full-integer variants (default uint8)")
    q.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list (default {','.join(VARIANTS)})")
    q.add_argument("--qat-epochs", type=int, default=3, metavar="N", help="quantization-aware fine-tuning epochs")
    q.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier (with --train)")
    q.add_argument("--size", type=int, default=96, help="input size in pixels (with --train)")
    q.add_argument("--epochs", type=int, default=15, help="training epochs (with --train)")
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--learning-rate", type=float, default=2e-3)
    q.add_argument("--imagenet", action="store_true",
                   help="start from ImageNet weights if they can be downloaded (else from scratch)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--tf-threads", type=int, default=0, metavar="N", help="TensorFlow threads (default: all)")
    q.set_defaults(func=_quantize)

    c = subparsers.add_parser(
        "compare", help="size, latency and accuracy of every variant in a directory",
        description="Measure every .tflite in DIR with the daemon's runtime on a labelled eval folder; "
                    "writes comparison.md, comparison.json and comparison.png into DIR.",
    )
    c.add_argument("dir", type=Path, help="output directory of `edgedetect quantize`")
    c.add_argument("--eval", type=Path, required=True, metavar="DIR",
                   help="labelled images, one sub-folder per class named as in the labels files")
    c.add_argument("--threads", type=int, default=1, help="interpreter threads for the timing (default 1)")
    c.add_argument("--max-images", type=int, default=0, metavar="N", help="use at most N eval images (0 = all)")
    c.set_defaults(func=_compare)


def _quantize(args: argparse.Namespace) -> int:
    from edgedetect.quantize.build import TrainConfig
    from edgedetect.quantize.pipeline import QuantizeOptions, parse_variants, run_quantize

    opts = QuantizeOptions(
        out=args.out,
        model=args.model,
        train_dir=args.train,
        calibration_dir=args.calibration,
        calibration_count=args.calibration_count,
        labels=args.labels,
        io=args.io,
        qat_epochs=args.qat_epochs,
        variants=parse_variants(args.variants),
        train=TrainConfig(size=args.size, alpha=args.alpha, epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.learning_rate, imagenet=args.imagenet, seed=args.seed),
        threads=args.tf_threads,
    )
    result = run_quantize(opts)
    for name, path in result.files.items():
        print(f"{name:16s} {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from edgedetect.quantize.compare import PLOT_FILE, TABLE_FILE, compare, write_report

    results = compare(args.dir, args.eval, threads=args.threads, max_images=args.max_images)
    print(write_report(results, args.dir), end="")
    print(f"wrote {args.dir / TABLE_FILE} and {args.dir / PLOT_FILE}")
    return 0
