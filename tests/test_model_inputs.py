"""int8 and float32 model inputs, with models the project's quantization toolkit made
(tests/data/digits/README.md): the numbers that land in the input tensor, and real accuracy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedetect.detect.classifier import Classifier
from edgedetect.detect.families import load_model
from edgedetect.detect.model import DetectFilter
from edgedetect.frames import Frame

DATA = Path(__file__).parent / "data" / "digits"
IMAGES = sorted((DATA / "images").glob("*.png"))
EVERY_CLASS = DetectFilter(threshold=0.0)  # a classifier's top k, however low they score


def model(name: str, input_range=(-1.0, 1.0)) -> Classifier:
    m = load_model(DATA / f"{name}.tflite", DATA / "labels.txt", 1, input_range)
    assert isinstance(m, Classifier)
    return m


def tensor(m: Classifier) -> np.ndarray:
    return m.interp.get_tensor(m.input.index)[0]


def rgb32(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(cv2.imread(str(path)), (32, 32), interpolation=cv2.INTER_LINEAR),
                        cv2.COLOR_BGR2RGB)


def test_int8_input_is_quantized_pixels():
    m = model("int8")
    assert m.input.dtype == "int8" and m.input.quantized
    m.prepare(Frame(0, 0.0, cv2.imread(str(IMAGES[0]))))
    got = tensor(m).astype(int)
    real = rgb32(IMAGES[0]) / 127.5 - 1.0
    want = np.clip(np.round(real / m.input.scale + m.input.zero_point), -128, 127)
    assert np.abs(got - want).max() <= 1  # the 127.5-vs-128 rounding convention at most


def test_float32_input_is_normalised():
    m = model("float32")
    assert m.input.dtype == "float32" and not m.input.quantized
    m.prepare(Frame(0, 0.0, cv2.imread(str(IMAGES[5]))))
    np.testing.assert_allclose(tensor(m), rgb32(IMAGES[5]) / 127.5 - 1.0, atol=1e-5)
    other = model("float32", (0.0, 1.0))  # a model trained on [0, 1] inputs
    other.prepare(Frame(0, 0.0, cv2.imread(str(IMAGES[5]))))
    np.testing.assert_allclose(tensor(other), rgb32(IMAGES[5]) / 255.0, atol=1e-5)


@pytest.mark.parametrize("name", ["float32", "int8"])
def test_classifies_digits(name):
    m = model(name)
    right = 0
    for path in IMAGES:
        top = m.run(cv2.imread(str(path)), EVERY_CLASS, top_k=3).classes
        assert len(top) == 3 and top[0].score >= top[1].score >= top[2].score
        right += top[0].label == path.name.split("_")[0]
    assert right / len(IMAGES) >= 0.6, right  # chance is 0.1


def test_int8_agrees_with_float():
    f, q = model("float32"), model("int8")
    agree = 0
    for path in IMAGES:
        img = cv2.imread(str(path))
        top_f, top_q = (m.run(img, EVERY_CLASS, top_k=1).classes for m in (f, q))
        agree += top_f[0].label == top_q[0].label
    assert agree / len(IMAGES) >= 0.8, agree
