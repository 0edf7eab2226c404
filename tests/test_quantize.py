"""The quantization toolkit end to end on a tiny model: six variants, their tensors, the
comparison, one variant through the daemon's pipeline, and the user-facing errors.

Skipped without the optional extra (pip install 'edgedetect[quantize]')."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow loads: tfmot needs Keras 2
pytest.importorskip("tensorflow")
pytest.importorskip("tf_keras")
pytest.importorskip("tensorflow_model_optimization")
pytest.importorskip("sklearn")

from edgedetect.errors import UserError  # noqa: E402
from edgedetect.quantize import VARIANTS, labels_path_for  # noqa: E402
from edgedetect.quantize.build import TrainConfig  # noqa: E402
from edgedetect.quantize.compare import compare, markdown_table, write_report  # noqa: E402
from edgedetect.quantize.demo import make_digits_folders  # noqa: E402
from edgedetect.quantize.pipeline import QuantizeOptions, run_quantize  # noqa: E402
from edgedetect.detect.runtime import load_interpreter  # noqa: E402

# tf-keras' weight initialisers call random.randint with floats: not ours, and harmless. The
# first test trains the six variants in its fixture: 4-6 minutes on a 2-core machine, past the
# suite's 300 s guard against hangs.
pytestmark = [pytest.mark.filterwarnings("ignore:non-integer arguments to randrange:DeprecationWarning"),
              pytest.mark.timeout(900)]

SIZE = 32  # MobileNetV2's smallest input; the digits are 8x8, so nothing is lost
CLASSES = [str(d) for d in range(10)]
INTEGER = ("int8", "int8-per-tensor", "qat")


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("quantize")
    splits = make_digits_folders(root / "digits", SIZE, seed=0, calibration=100)
    out = root / "models"
    cfg = TrainConfig(size=SIZE, alpha=0.35, epochs=8, seed=0)
    run_quantize(QuantizeOptions(out=out, train_dir=splits.train, calibration_dir=splits.calibration,
                                 calibration_count=100, io="uint8", qat_epochs=1, train=cfg))
    results = {r.name: r for r in compare(out, splits.eval, threads=1)}
    return {"out": out, "splits": splits, "results": results}


KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _graph(path: Path) -> tuple[list[dict], dict[int, dict]]:
    interp = load_interpreter(path, 1)
    return interp._get_ops_details(), {d["index"]: d for d in interp.get_tensor_details()}


def _kernels(path: Path, ops: tuple[str, ...] = KERNEL_OPS) -> list[dict]:
    """The weight tensor (input 1) of every conv and dense op."""
    graph, tensors = _graph(path)
    return [tensors[int(op["inputs"][1])] for op in graph if op["op_name"] in ops]


def test_six_variants_with_labels(produced: dict) -> None:
    out = produced["out"]
    for v in VARIANTS:
        path = out / f"{v}.tflite"
        assert path.is_file(), v
        assert path.read_bytes()[4:8] == b"TFL3"
        assert labels_path_for(path).read_text().split() == CLASSES
    assert (out / "float32.keras").exists()


def test_input_output_types(produced: dict) -> None:
    for v in VARIANTS:
        interp = load_interpreter(produced["out"] / f"{v}.tflite", 1)
        (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
        assert tuple(inp["shape"]) == (1, SIZE, SIZE, 3)
        assert tuple(out["shape"]) == (1, 10)
        want = np.uint8 if v in INTEGER else np.float32
        assert inp["dtype"] == want and out["dtype"] == want, v
        if v in INTEGER:
            # The input range is the calibration's [-1, 1]: raw pixels are the quantized values.
            scale, zero = inp["quantization"]
            assert scale == pytest.approx(2 / 255, rel=0.02) and zero in (127, 128), v
            assert out["quantization"][0] == pytest.approx(1 / 256, rel=0.02), v  # softmax


def test_weight_quantization(produced: dict) -> None:
    out = produced["out"]
    assert all(k["dtype"] == np.float32 for k in _kernels(out / "float32.tflite"))

    graph, tensors = _graph(out / "float16.tflite")
    halves = [op for op in graph if op["op_name"] == "DEQUANTIZE" and tensors[int(op["inputs"][0])]["dtype"] == np.float16]
    assert len(halves) >= 0.9 * len(_kernels(out / "float16.tflite"))  # weights stored as float16

    # Dynamic range quantizes every kernel of 1024 values or more and leaves smaller ones float.
    dynamic = _kernels(out / "dynamic.tflite")
    assert sum(k["dtype"] == np.int8 for k in dynamic) > 30
    for k in dynamic:
        assert k["dtype"] == (np.int8 if np.prod(k["shape"]) >= 1024 else np.float32), k["name"]

    for v in ("int8", "qat"):
        convs = _kernels(out / f"{v}.tflite", ("CONV_2D", "DEPTHWISE_CONV_2D"))
        assert len(convs) > 30, v
        for k in convs:
            qp = k["quantization_parameters"]
            assert k["dtype"] == np.int8, (v, k["name"])
            assert len(qp["scales"]) == k["shape"][qp["quantized_dimension"]] > 1, (v, k["name"])
    per_tensor = _kernels(out / "int8-per-tensor.tflite", ("CONV_2D", "DEPTHWISE_CONV_2D"))
    assert len(per_tensor) > 30
    for k in per_tensor:
        assert k["dtype"] == np.int8 and len(k["quantization_parameters"]["scales"]) == 1, k["name"]
    # TF 2.18's quantizer keeps the dense layer per-channel despite both per-tensor switches;
    # it is the one exception (see models/README.md).
    dense = _kernels(out / "int8-per-tensor.tflite", ("FULLY_CONNECTED",))
    assert len(dense) == 1 and dense[0]["dtype"] == np.int8


def test_sizes(produced: dict) -> None:
    r = produced["results"]
    # Weights shrink 4x; each per-channel kernel and bias also carries a float32 scale and an
    # int64 zero point per channel, which on an alpha-0.35 MobileNetV2 costs a quarter of the file.
    assert 2.3 < r["int8"].smaller_than_float < 5
    assert 3.3 < r["int8-per-tensor"].smaller_than_float < 5
    assert 2.3 < r["qat"].smaller_than_float < 5
    assert 1.8 < r["float16"].smaller_than_float < 2.1
    assert 2.5 < r["dynamic"].smaller_than_float < 5


def test_accuracy_and_agreement(produced: dict) -> None:
    r = produced["results"]
    assert r["float32"].accuracy > 0.85
    assert r["float16"].agreement > 0.99 and r["dynamic"].agreement > 0.97
    assert r["int8"].accuracy >= r["float32"].accuracy - 0.04
    assert r["int8"].agreement > 0.93
    assert r["qat"].accuracy >= r["float32"].accuracy - 0.05
    for v in VARIANTS:
        assert r[v].median_ms > 0 and r[v].mean_abs_diff >= 0


def test_report_files(produced: dict) -> None:
    out = produced["out"]
    table = write_report(list(produced["results"].values()), out)
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| variant")]
    assert [row.split("|")[1].strip() for row in rows] == list(VARIANTS)
    assert (out / "comparison.md").read_text() == table == markdown_table(list(produced["results"].values()))
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_int8_classifies_in_daemon_pipeline(produced: dict) -> None:
    """The produced int8 model through the daemon's own model loading and preprocessing."""
    import cv2

    from edgedetect.detect.families import load_model
    from edgedetect.detect.model import DetectFilter

    path = produced["out"] / "int8.tflite"
    model = load_model(path, labels_path_for(path), threads=1)
    assert model.kind == "classifier"
    eval_dir = produced["splits"].eval
    hits = total = 0
    for digit in CLASSES:
        for image in sorted((eval_dir / digit).glob("*.png"))[:5]:
            # frames reach the daemon as BGR
            top = model.run(cv2.imread(str(image)), DetectFilter(threshold=0.0), top_k=3, bgr=True).classes
            assert len(top) == 3 and top[0].score >= top[1].score
            hits += top[0].label == digit
            total += 1
    assert hits / total >= produced["results"]["int8"].accuracy - 0.1


def test_models_info_shows_quantization(produced: dict) -> None:
    from edgedetect.detect.describe import describe_model

    out = produced["out"]
    int8, per_tensor, flt = (describe_model(out / f"{v}.tflite") for v in ("int8", "int8-per-tensor", "float32"))
    assert int8.per_channel_weights > 30 and per_tensor.per_channel_weights <= 1  # the dense layer
    assert per_tensor.quantized_weights > 30 and flt.quantized_weights == 0
    assert "scale=" in int8.inputs[0].describe()


# --- errors a user can act on -------------------------------------------------------------


def test_empty_calibration_folder(produced: dict, tmp_path: Path) -> None:
    empty = tmp_path / "calib"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"calibration folder .*calib: no images found"):
        run_quantize(QuantizeOptions(out=tmp_path / "o", train_dir=produced["splits"].train, calibration_dir=empty))


def test_eval_classes_do_not_match(produced: dict, tmp_path: Path) -> None:
    wrong = tmp_path / "eval"
    for name in ("cat", "dog"):
        (wrong / name).mkdir(parents=True)
        src = next((produced["splits"].eval / "0").glob("*.png"))
        (wrong / name / "a.png").write_bytes(src.read_bytes())
    with pytest.raises(UserError, match=r"eval folder classes \['cat', 'dog'\] do not match"):
        compare(produced["out"], wrong)


def test_model_that_cannot_be_converted() -> None:
    from edgedetect.quantize import convert
    from edgedetect.quantize._tf import require_tf

    tf, keras = require_tf()
    inp = keras.Input((4, 4, 3))
    svd = keras.layers.Lambda(lambda t: tf.linalg.svd(tf.reshape(t, (-1, 4, 12)), compute_uv=False))(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(svd), name="svd_model")
    with pytest.raises(UserError, match=r"cannot convert svd_model to the float32 variant: .*Svd"):
        convert.to_float32(model)


def test_not_a_keras_model(tmp_path: Path) -> None:
    bogus = tmp_path / "model.h5"
    bogus.write_bytes(b"not a model")
    with pytest.raises(UserError, match=r"model.h5: cannot load as a Keras model"):
        run_quantize(QuantizeOptions(out=tmp_path / "o", model=bogus, variants=("float32",)))


def test_tensorflow_missing(produced: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI module imports without TensorFlow; running it names the extra to install."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now raises ImportError
    monkeypatch.delitem(sys.modules, "edgedetect.quantize.cli", raising=False)
    from edgedetect.quantize import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["quantize", "--train", str(produced["splits"].train), "-o", str(tmp_path / "o")])
    with pytest.raises(UserError, match=r"^TensorFlow is not installed: pip install 'edgedetect\[quantize\]'$"):
        args.func(args)
