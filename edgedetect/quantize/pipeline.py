"""`edgedetect quantize`: one Keras model in, every variant (+ labels) out into one directory."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgedetect.errors import UserError
from edgedetect.quantize import VARIANTS, labels_path_for
from edgedetect.quantize import build, convert
from edgedetect.quantize._tf import require_tf, seed_everything
from edgedetect.quantize.dataset import (
    load_pixels,
    normalise,
    read_class_names,
    scan_calibration,
    scan_labelled,
    write_labels,
)

MANIFEST = "quantize.json"
KERAS_FILE = "float32.keras"  # the trained float model, kept so that a run can be repeated from it


@dataclass(frozen=True, slots=True)
class QuantizeOptions:
    out: Path
    model: Path | None = None  # a Keras model; None = build and train a MobileNetV2 on train_dir
    train_dir: Path | None = None  # labelled folder: trains the model, fine-tunes QAT
    calibration_dir: Path | None = None
    calibration_count: int = 200
    labels: Path | None = None  # class names for a given model (else from train_dir, else "class i")
    io: str = "uint8"
    qat_epochs: int = 3
    variants: tuple[str, ...] = VARIANTS
    train: build.TrainConfig = field(default_factory=build.TrainConfig)
    threads: int = 0  # TensorFlow threads, 0 = its default


@dataclass(slots=True)
class QuantizeResult:
    out: Path
    classes: list[str]
    size: int
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    keras_train_accuracy: float | None = None


def parse_variants(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise UserError(f"--variants {text}: unknown {', '.join(bad) or 'empty list'}; expected a comma list of {', '.join(VARIANTS)}")
    return tuple(v for v in VARIANTS if v in names)


def _configure_threads(n: int) -> None:
    if n <= 0:
        return
    tf, _ = require_tf()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))
    except RuntimeError:
        pass  # TensorFlow already started in this process; keep its setting


def _note(result: QuantizeResult, text: str) -> None:
    result.notes.append(text)
    print(text, file=sys.stderr)


def run_quantize(opts: QuantizeOptions) -> QuantizeResult:
    if opts.io not in convert.IO_TYPES:
        raise UserError(f"--io {opts.io}: expected one of {', '.join(convert.IO_TYPES)}")
    if opts.model is None and opts.train_dir is None:
        raise UserError("nothing to quantize: give a Keras model file/SavedModel or --train DIR to train a MobileNetV2")
    if opts.calibration_count < 1:
        raise UserError(f"--calibration-count {opts.calibration_count}: expected at least 1")
    # Validate folders before TensorFlow takes seconds to load.
    train_folder = scan_labelled(opts.train_dir, "train") if opts.train_dir else None
    needs_int = any(v in ("int8", "int8-per-tensor", "qat") for v in opts.variants)
    calib_paths = None
    if opts.calibration_dir is not None:
        calib_paths = scan_calibration(opts.calibration_dir, opts.calibration_count, opts.train.seed)

    require_tf()
    _configure_threads(opts.threads)
    seed_everything(opts.train.seed)
    t0 = time.perf_counter()

    if opts.model is not None:
        model = build.load_keras_model(opts.model)
        size, n = build.model_geometry(model, opts.model)
        if opts.labels is not None:
            classes = read_class_names(opts.labels)
        elif train_folder is not None:
            classes = list(train_folder.classes)
        else:
            classes = [f"class {i}" for i in range(n)]
        if len(classes) != n:
            src = opts.labels or (train_folder.root if train_folder else "labels")
            raise UserError(f"{src}: {len(classes)} classes for a model with {n} outputs ({opts.model})")
    else:
        assert train_folder is not None
        size, classes = opts.train.size, list(train_folder.classes)
        model = None
    result = QuantizeResult(opts.out, classes, size)

    x_train = y_train = None
    if train_folder is not None:
        x_train = normalise(load_pixels(train_folder.paths, size))
        y_train = np.asarray(train_folder.labels, np.int32)
    if model is None:
        assert x_train is not None and y_train is not None
        model = build.build_mobilenet_v2(len(classes), opts.train)
        build.train(model, x_train, y_train, opts.train)
        result.keras_train_accuracy = build.float_accuracy(model, x_train, y_train)
    result.seconds["train"] = time.perf_counter() - t0

    calibration = None
    if needs_int:
        if calib_paths is None:
            if train_folder is None:
                raise UserError("--calibration DIR is needed for the int8, int8-per-tensor and qat variants")
            calib_paths = scan_calibration(train_folder.root, opts.calibration_count, opts.train.seed)
            _note(result, f"no --calibration: calibrating on {len(calib_paths)} training images")
        calibration = convert.Calibration(normalise(load_pixels(calib_paths, size)))

    opts.out.mkdir(parents=True, exist_ok=True)
    if opts.model is None:
        model.save(str(opts.out / KERAS_FILE))

    for variant in opts.variants:
        t = time.perf_counter()
        if variant == "float32":
            data = convert.to_float32(model)
        elif variant == "dynamic":
            data = convert.to_dynamic(model)
        elif variant == "float16":
            data = convert.to_float16(model)
        elif variant == "int8":
            data = convert.to_int8(model, calibration, opts.io, per_channel=True)
        elif variant == "int8-per-tensor":
            data = convert.to_int8(model, calibration, opts.io, per_channel=False)
        else:  # qat
            if x_train is None or y_train is None:
                _note(result, "qat skipped: quantization-aware fine-tuning needs labelled images (--train DIR)")
                continue
            qat_model = build.quantization_aware(model, x_train, y_train, opts.qat_epochs, opts.train)
            data = convert.to_qat(qat_model, calibration, opts.io)
        path = opts.out / f"{variant}.tflite"
        path.write_bytes(data)
        write_labels(labels_path_for(path), classes)
        result.files[variant] = path
        result.seconds[variant] = time.perf_counter() - t

    manifest = {
        "classes": classes,
        "size": size,
        "io": opts.io,
        "calibration_images": 0 if calibration is None else int(len(calibration.images)),
        "qat_epochs": opts.qat_epochs,
        "train": asdict(opts.train) if opts.model is None else None,
        "source_model": str(opts.model) if opts.model else KERAS_FILE,
        "keras_train_accuracy": result.keras_train_accuracy,
        "files": {k: v.name for k, v in result.files.items()},
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        "notes": result.notes,
    }
    (opts.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return result
