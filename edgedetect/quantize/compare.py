"""`edgedetect compare`: every variant in a directory, measured with the daemon's runtime
(ai-edge-litert via edgedetect.detect.runtime) on a labelled eval folder. Needs no TensorFlow."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedetect.errors import UserError
from edgedetect.quantize import VARIANTS, labels_path_for
from edgedetect.quantize.dataset import load_pixels, normalise, read_class_names, scan_labelled
from edgedetect.detect.runtime import load_interpreter

TABLE_FILE = "comparison.md"
PLOT_FILE = "comparison.png"
JSON_FILE = "comparison.json"


@dataclass(frozen=True, slots=True)
class VariantResult:
    name: str
    size_bytes: int
    smaller_than_float: float  # float32 size / this size
    median_ms: float
    accuracy: float  # top-1 on the eval folder
    agreement: float  # top-1 equal to the float32 model's
    mean_abs_diff: float  # mean |p - p_float| over all eval images and classes (probabilities)
    input_dtype: str
    output_dtype: str


def find_variants(directory: Path) -> list[Path]:
    """The known variants in table order, then any other .tflite in the folder."""
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory (expected the output folder of `edgedetect quantize`)")
    known = [directory / f"{v}.tflite" for v in VARIANTS if (directory / f"{v}.tflite").is_file()]
    others = sorted(p for p in directory.glob("*.tflite") if p not in known)
    if not known and not others:
        raise UserError(f"{directory}: no .tflite models found")
    return known + others


def _quantize_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x
    scale, zero = detail["quantization"]
    if not scale:
        raise UserError(f"input {detail['name']}: integer input without quantization parameters")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    if np.dtype(detail["dtype"]) == np.float32 or not scale:
        return y.astype(np.float32)
    return (y.astype(np.float32) - zero) * scale


def run_variant(path: Path, x: np.ndarray, threads: int) -> tuple[np.ndarray, list[float], str, str]:
    """Outputs (dequantized) for every image in x, and the time of every invoke."""
    interp = load_interpreter(path, threads)
    inp = interp.get_input_details()
    out = interp.get_output_details()
    if len(inp) != 1 or len(out) != 1:
        raise UserError(f"{path}: {len(inp)} inputs and {len(out)} outputs; expected one image in, one class vector out")
    inp, out = inp[0], out[0]
    want = (1, x.shape[1], x.shape[2], 3)
    if tuple(inp["shape"]) != want:
        raise UserError(f"{path}: input shape {tuple(inp['shape'])}, the eval images are {want}")
    q = _quantize_input(x, inp)
    for _ in range(3):  # warm-up: first invokes pay for packing weights and caches
        interp.set_tensor(inp["index"], q[:1])
        interp.invoke()
    outputs = np.empty((len(x), int(np.prod(out["shape"]))), np.float32)
    times: list[float] = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], q[i : i + 1])
        t = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t) * 1000.0)
        outputs[i] = _dequantize(interp.get_tensor(out["index"]), out).reshape(-1)
    return outputs, times, np.dtype(inp["dtype"]).name, np.dtype(out["dtype"]).name


def _check_classes(path: Path, eval_classes: tuple[str, ...], outputs: int | None = None) -> None:
    labels_file = labels_path_for(path)
    if labels_file.is_file():
        labels = read_class_names(labels_file)
        if list(labels) != list(eval_classes):
            raise UserError(
                f"eval folder classes {list(eval_classes)} do not match {labels_file} {labels}; "
                "expected one sub-folder per label, with the same names"
            )
    if outputs is not None and outputs != len(eval_classes):
        raise UserError(f"{path}: {outputs} outputs but the eval folder has {len(eval_classes)} classes")


def compare(directory: str | Path, eval_dir: str | Path, threads: int = 1,
            max_images: int = 0) -> list[VariantResult]:
    directory, eval_dir = Path(directory), Path(eval_dir)
    models = find_variants(directory)
    folder = scan_labelled(eval_dir, "eval")
    for path in models:  # before minutes of inference, not after
        _check_classes(path, folder.classes)
    paths, labels = list(folder.paths), np.asarray(folder.labels)
    if max_images and len(paths) > max_images:
        keep = np.random.default_rng(0).choice(len(paths), max_images, replace=False)
        keep.sort()
        paths, labels = [paths[i] for i in keep], labels[keep]
    first = load_interpreter(models[0], 1).get_input_details()[0]
    size = int(first["shape"][1])
    x = normalise(load_pixels(paths, size))
    reference: np.ndarray | None = None
    rows: list[tuple[str, int, np.ndarray, list[float], str, str]] = []
    for path in models:
        outputs, times, dt_in, dt_out = run_variant(path, x, threads)
        _check_classes(path, folder.classes, outputs.shape[1])
        if path.stem == "float32":
            reference = outputs
        rows.append((path.stem, path.stat().st_size, outputs, times, dt_in, dt_out))
    if reference is None:
        reference = rows[0][2]  # no float32 variant: agreement is against the first model
    float_size = next((r[1] for r in rows if r[0] == "float32"), rows[0][1])
    ref_top = reference.argmax(axis=1)
    results = []
    for name, size_bytes, outputs, times, dt_in, dt_out in rows:
        top = outputs.argmax(axis=1)
        results.append(VariantResult(
            name=name,
            size_bytes=size_bytes,
            smaller_than_float=float_size / size_bytes,
            median_ms=statistics.median(times),
            accuracy=float(np.mean(top == labels)),
            agreement=float(np.mean(top == ref_top)),
            mean_abs_diff=float(np.mean(np.abs(outputs - reference))),
            input_dtype=dt_in,
            output_dtype=dt_out,
        ))
    return results


def markdown_table(results: list[VariantResult]) -> str:
    head = ("| variant | size (KB) | float size / size | median invoke (ms) | top-1 accuracy "
            "| agreement with float | mean abs diff vs float | input / output |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| {r.name} | {r.size_bytes / 1024:.1f} | {r.smaller_than_float:.2f}x | {r.median_ms:.3f} "
            f"| {r.accuracy * 100:.2f}% | {r.agreement * 100:.2f}% | {r.mean_abs_diff:.5f} "
            f"| {r.input_dtype} / {r.output_dtype} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[VariantResult], path: Path) -> Path | None:
    """Accuracy against size and against latency; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    markers = "osD^vP*Xh"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, key, xlabel in ((axes[0], "size", "model size (KB)"), (axes[1], "ms", "median invoke (ms)")):
        for i, r in enumerate(results):
            xv = r.size_bytes / 1024 if key == "size" else r.median_ms
            # Variants often coincide (same size or speed): markers + legend instead of text labels.
            ax.scatter(xv, r.accuracy * 100, s=60, marker=markers[i % len(markers)], label=r.name, alpha=0.8)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    accs = [r.accuracy * 100 for r in results]
    # At least a two-point span, so that one image more or less does not look like a cliff.
    axes[0].set_ylim(min(accs) - 1.5, min(100.5, max(accs) + 0.5))
    axes[0].set_ylabel("top-1 accuracy on eval (%)")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Quantization variants: accuracy against size and latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: list[VariantResult], directory: Path) -> str:
    table = markdown_table(results)
    (directory / TABLE_FILE).write_text(table, encoding="utf-8")
    (directory / JSON_FILE).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")
    plot(results, directory / PLOT_FILE)
    return table
