"""YOLOv5, YOLOv8/YOLO11 and NMS-exported YOLO detectors, on the real models in ../shared/models:
what they find, how their boxes agree with the SSD's, their decode against a plain one written
here, labels from the model file, letterbox geometry, and the cost of decode + NMS."""

from __future__ import annotations

import io
import logging
import math
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import COCO_LABELS, DETECTOR, MEDIA, MODELS, VTEST, iou
from daemonproc import DaemonProcess
from edgedetect.config import ModelConfig
from edgedetect.detect.families import FAMILIES, load_model
from edgedetect.detect.metadata import model_labels
from edgedetect.detect.model import DetectFilter
from edgedetect.detect.nms import Quant, nms
from edgedetect.detect.preprocess import PAD_VALUE, Fit
from edgedetect.detect.resolve import ModelFiles, load_configured
from edgedetect.detect.tensors import TensorInfo
from edgedetect.detect.yolo import YoloNms, YoloV5, YoloV8
from edgedetect.errors import ModelError
from edgedetect.frames import Frame

YOLOV8 = MODELS / "yolov8n_full_integer_quant.tflite"  # int8 in and out, [1, 84, 8400], names in temp_meta.txt
YOLO11 = MODELS / "yolo11n_int8.tflite"  # float in and out, [1, 84, 8400], names in metadata.json
YOLO_NMS = MODELS / "yolov8n_320_nms_int8.tflite"  # float, [1, 300, 6], names in temp_meta.txt
YOLOV5 = MODELS / "yolov5n-int8.tflite"  # uint8 in and out, [1, 25200, 85], no names
YOLOV5_EDGETPU = MODELS / "yolov5n-int8_edgetpu.tflite"
COCO80 = MODELS / "coco80_labels.txt"

YOLOS = {"yolov8n": (YOLOV8, YoloV8), "yolo11n": (YOLO11, YoloV8), "yolov8n-320-nms": (YOLO_NMS, YoloNms),
         "yolov5n": (YOLOV5, YoloV5)}

# On an Arm CPU (a Pi, or .ci/aarch64.sh's emulation at about 16 s a 640x640 invoke) the tests that
# run the 640 models, or many frames, take well over 10 s: there they are slow ones, and the 320x320
# NMS export stands for the YOLO models in the quick run (the decode of every layout is still checked
# there, on synthetic outputs).
ON_ARM = platform.machine().lower() in ("aarch64", "arm64", "armv7l")
QUICK_ON_ARM = "yolov8n-320-nms"


def arm_slow(test):
    return pytest.mark.slow(test) if ON_ARM else test


def yolo_params(names=tuple(YOLOS)):
    return [pytest.param(n, marks=pytest.mark.slow) if ON_ARM and n != QUICK_ON_ARM else n for n in names]


@pytest.fixture(scope="module", params=yolo_params())
def yolo(request):
    path, _ = YOLOS[request.param]
    return load_model(path, COCO80, threads=2)


@pytest.fixture(scope="module")
def ssd():
    return load_model(DETECTOR, COCO_LABELS, threads=2)


def image(name: str) -> np.ndarray:
    img = cv2.imread(str(MEDIA / name))
    assert img is not None, name
    return img


def vtest_frames(indices=(0, 140, 280, 420, 560, 700)) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VTEST))
    frames, i = [], 0
    try:
        while len(frames) < len(indices):
            ok, frame = cap.read()
            assert ok, f"vtest.avi ended at frame {i}"
            if i in indices:
                frames.append(frame)
            i += 1
    finally:
        cap.release()
    return frames


def labels_of(dets, threshold: float = 0.0) -> list[str]:
    return [d.label for d in dets if d.score >= threshold]


# --- families recognised from the output tensors -----------------------------------------------

@pytest.mark.parametrize("name", list(YOLOS))
def test_family_recognised_from_outputs(name):
    path, family = YOLOS[name]
    m = load_model(path, None, 1)
    assert type(m) is family and m.kind == "detector" and m.input_range == (0.0, 1.0)
    fit = m.prepare(Frame(0, 0.0, np.zeros((480, 640, 3), np.uint8)))
    assert fit.offset_y > 0 and fit.offset_x == 0  # letterboxed by default


def _info(shape, dtype="float32") -> list[TensorInfo]:
    return [TensorInfo(0, "out", shape, dtype, (), ())]


@pytest.mark.parametrize("shape, family", [
    ((1, 84, 8400), "yolov8"), ((1, 8400, 84), "yolov8"), ((1, 6, 2100), "yolov8"),
    ((1, 25200, 85), "yolov5"), ((1, 6300, 85), "yolov5"), ((1, 25200, 6), "yolov5"),
    ((1, 300, 6), "yolo-nms"), ((1, 100, 6), "yolo-nms"),
    ((1, 1001), "classifier"),
])
def test_layouts_are_unambiguous(shape, family):
    """The first family in FAMILIES that accepts a layout is the right one (auto)."""
    first = next(f for f in FAMILIES if f.recognise(_info(shape)) is not None)
    assert first.family == family


def test_family_override(tmp_path):
    m = load_model(YOLO11, None, 1, family="yolov8")
    assert isinstance(m, YoloV8)
    with pytest.raises(ModelError, match=r"unsupported outputs .*expected yolo-nms"):
        load_model(YOLO11, None, 1, family="yolo-nms")


# --- what they find -------------------------------------------------------------------------------

def test_person_in_grace_hopper(yolo):
    dets = yolo.run(image("grace_hopper.bmp"), DetectFilter(threshold=0.5)).detections
    persons = [d for d in dets if d.label == "person"]
    assert persons, dets
    # One big box: she fills the picture.
    x0, y0, x1, y1 = persons[0].box
    assert (x1 - x0) * (y1 - y0) > 0.6, persons[0]


def test_dogs_in_pets(yolo):
    dets = yolo.run(image("pets.jpg"), DetectFilter(threshold=0.5)).detections
    dogs = [d for d in dets if d.label == "dog"]
    assert len(dogs) == 2, dets
    assert iou(dogs[0].box, dogs[1].box) < 0.1  # two dogs, not one dog twice


def test_kites_and_persons(yolo):
    dets = yolo.run(image("kite_and_cold.jpg"), DetectFilter(threshold=0.5)).detections
    assert labels_of(dets).count("kite") >= 2, dets
    assert labels_of(dets).count("person") >= 2, dets


@arm_slow
def test_weak_detections_leave_the_strong_ones_unchanged(yolo):
    """Decoded down to a weak threshold and split, the strong detections are a plain decode's
    (class-wise NMS keeps a box only against higher scores); the weak ones lie in between."""
    weak = []
    for img in [image("kite_and_cold.jpg"), *vtest_frames((100, 300, 500))]:
        plain = yolo.run(img, DetectFilter(threshold=0.5))
        split = yolo.run(img, DetectFilter(threshold=0.5, weak_threshold=0.1))
        assert split.detections == plain.detections
        assert all(0.1 <= d.score < 0.5 for d in split.weak)
        weak += split.weak
    assert weak  # half-hidden walkers and far kites score low


def test_persons_throughout_vtest(yolo):
    for i, frame in enumerate(vtest_frames()):
        dets = yolo.run(frame, DetectFilter(threshold=0.5)).detections
        assert labels_of(dets).count("person") >= 2, (i, dets)


@arm_slow
def test_boxes_agree_with_ssd(yolo, ssd):
    """Every big object the SSD finds, the YOLO model finds in the same place (IoU > 0.5); over all
    the media, most of the SSD's confident persons, dogs and kites too (small, crowded objects are
    framed differently by different detectors)."""
    pictures = [("grace_hopper.bmp", image("grace_hopper.bmp")), ("pets.jpg", image("pets.jpg")),
                ("kite_and_cold.jpg", image("kite_and_cold.jpg"))]
    pictures += [(f"vtest #{i}", f) for i, f in enumerate(vtest_frames())]
    matched, total, misses = 0, 0, []
    for name, img in pictures:
        theirs = [d for d in ssd.run(img, DetectFilter(threshold=0.75)).detections
                  if d.label in ("person", "dog", "kite")]
        ours = yolo.run(img, DetectFilter(threshold=0.3, max_detections=50)).detections
        for d in theirs:
            best = max((iou(d.box, e.box) for e in ours if e.label == d.label), default=0.0)
            big = (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) > 0.1
            if big:
                assert best > 0.5, f"{name}: SSD's {d.label} {d.box} best IoU {best:.2f}"
            total += 1
            matched += best > 0.5
            if best <= 0.5:
                misses.append(f"{name} {d.label} {best:.2f}")
    assert total >= 20
    assert matched / total >= 0.7, (matched, total, misses)


# --- decode against a plain one ------------------------------------------------------------------

def plain_decode(model, fit: Fit, threshold: float, iou_limit: float, max_det: int) -> list[tuple[int, float, tuple]]:
    """Every output value dequantized to float, boxes and scores per anchor, then NMS as a plain
    loop per class; boxes mapped to the frame with its letterbox fit."""
    t = model.layout.tensor
    raw = model.interp.get_tensor(t.index)[0]
    real = (raw.astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale) if t.quantized \
        else raw.astype(np.float32)
    if isinstance(model, YoloNms):
        rows = [(int(round(r[5])), float(r[4]), tuple(float(v) for v in r[:4])) for r in real]
        found = sorted((r for r in rows if r[1] >= threshold), key=lambda r: -r[1])[:max_det]
    else:
        if isinstance(model, YoloV5):
            scores = real[:, 5:] * real[:, 4:5]
            boxes = real[:, :4]
        else:
            rows = real.T if t.shape[1] < t.shape[2] else real
            scores, boxes = rows[:, 4:], rows[:, :4]
        cand = []
        for i in range(scores.shape[0]):
            k = int(np.argmax(scores[i]))
            s = float(scores[i, k])
            if s >= threshold:
                cx, cy, w, h = (float(v) for v in boxes[i])
                cand.append((k, s, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
        cand.sort(key=lambda c: -c[1])
        found = []
        for c in cand:
            if all(o[0] != c[0] or iou(o[2], c[2]) <= iou_limit for o in found):
                found.append(c)
        found = found[:max_det]
    out = []
    for k, s, (x0, y0, x1, y1) in found:
        box = ((x0 - fit.offset_x) * fit.gain_x, (y0 - fit.offset_y) * fit.gain_y,
               (x1 - fit.offset_x) * fit.gain_x, (y1 - fit.offset_y) * fit.gain_y)
        out.append((k, s, tuple(min(1.0, max(0.0, v)) for v in box)))
    return out


@arm_slow
@pytest.mark.parametrize("threshold", [0.25, 0.5])
def test_decode_agrees_with_plain_decode(yolo, threshold):
    flt = DetectFilter(threshold=threshold, max_detections=100)
    for img in [image("kite_and_cold.jpg"), image("pets.jpg"), *vtest_frames((0, 300))]:
        found = yolo.run(img, flt)
        got = found.detections
        want = plain_decode(yolo, found.fit, threshold, flt.iou, flt.max_detections)
        assert len(got) == len(want) and len(want) > 0, (got, want)
        for d, (k, s, box) in zip(got, want):
            assert d.class_id == k
            assert d.score == pytest.approx(s, abs=1e-6)
            assert d.box == pytest.approx(box, abs=1e-5)


def synthetic_outputs(model, rng: np.random.Generator) -> np.ndarray:
    """Raw output values for the model's own layout and type: low scores everywhere, and clusters of
    strong, overlapping boxes of a few classes (same place, several classes too), in real values then
    quantized as the runtime would."""
    t = model.layout.tensor
    if isinstance(model, YoloNms):
        real = np.zeros(t.shape[1:], np.float32)
        k = 40
        xy = rng.uniform(0.0, 0.7, (k, 2))
        wh = rng.uniform(0.02, 0.3, (k, 2))
        real[:k, :2], real[:k, 2:4] = xy, xy + wh
        real[:k, 4] = np.sort(rng.uniform(0.05, 0.99, k))[::-1]
        real[:k, 5] = rng.integers(0, 80, k)
    else:
        v5 = isinstance(model, YoloV5)
        n, classes = t.shape[1] if v5 else max(t.shape[1:]), model.num_classes
        first = 5 if v5 else 4
        rows = np.zeros((n, first + classes), np.float32)
        rows[:, first:] = rng.uniform(0.0, 0.2, (n, classes))
        if v5:
            rows[:, 4] = rng.uniform(0.0, 0.3, n)
        rows[:, :2] = rng.uniform(0.05, 0.95, (n, 2))
        rows[:, 2:4] = rng.uniform(0.01, 0.2, (n, 2))
        strong = rng.choice(n, 60, replace=False)
        centres = rng.uniform(0.2, 0.8, (6, 2))
        for j, i in enumerate(strong):
            rows[i, :2] = centres[j % 6] + rng.normal(0, 0.01, 2)  # clusters: NMS has work to do
            rows[i, 2:4] = rng.uniform(0.1, 0.3, 2)
            rows[i, first + rng.integers(0, 3) * 7] = rng.uniform(0.3, 0.99)
            if v5:
                rows[i, 4] = rng.uniform(0.6, 1.0)
        real = rows if (v5 or t.shape[1] > t.shape[2]) else rows.T
    if not t.quantized:
        return real[None].astype(np.float32)
    info = np.iinfo(t.dtype)
    return np.clip(np.round(real / t.scale + t.zero_point), info.min, info.max).astype(t.dtype)[None]


@pytest.mark.parametrize("name", list(YOLOS))
def test_decode_agrees_on_synthetic_outputs(name):
    """The decode of every layout against the plain one, on made-up output values written into the
    output tensor (no invoke: quick on an emulated Arm too), letterboxed from a 768x576 frame."""
    m = load_model(YOLOS[name][0], COCO80, 1)
    fit = m.prepare(Frame(0, 0.0, np.zeros((576, 768, 3), np.uint8)))
    rng = np.random.default_rng(11)
    for threshold in (0.25, 0.5, 0.8):
        view = m.interp.tensor(m.layout.tensor.index)()
        view[...] = synthetic_outputs(m, rng)
        del view
        flt = DetectFilter(threshold=threshold, max_detections=100)
        got = m.decode(fit, flt).detections
        want = plain_decode(m, fit, threshold, flt.iou, flt.max_detections)
        assert len(got) == len(want) and len(want) > 0, (threshold, got, want)
        for d, (k, sc, box) in zip(got, want):
            assert (d.class_id, d.score) == (k, pytest.approx(sc, abs=1e-6))
            assert d.box == pytest.approx(box, abs=1e-5)


@arm_slow
def test_allow_deny_and_max_detections(yolo):
    img = image("kite_and_cold.jpg")
    every = yolo.run(img, DetectFilter(threshold=0.3, max_detections=100)).detections
    assert {"kite", "person"} <= set(labels_of(every))
    kites = yolo.run(img, DetectFilter(threshold=0.3, allow=frozenset({"kite"}), max_detections=100)).detections
    assert kites and set(labels_of(kites)) == {"kite"}
    assert [d.box for d in kites] == [d.box for d in every if d.label == "kite"]
    no_kites = yolo.run(img, DetectFilter(threshold=0.3, deny=frozenset({"kite"}), max_detections=100)).detections
    assert "kite" not in labels_of(no_kites) and len(no_kites) == len(every) - len(kites)
    two = yolo.run(img, DetectFilter(threshold=0.3, max_detections=2)).detections
    assert two == every[:2]


def test_raw_threshold_is_exact():
    """The threshold on raw integers selects exactly the values whose dequantized value passes."""
    for dtype, scale, zp in [("int8", 0.003986023832112551, -128), ("uint8", 0.0044834911823272705, 3),
                             ("int8", 0.0173, 11), ("uint8", 0.5, 0)]:
        q = Quant(dtype, scale, zp)
        info = np.iinfo(dtype)
        raws = np.arange(info.min, info.max + 1).astype(dtype)
        real = (raws.astype(np.float32) - np.float32(zp)) * np.float32(scale)
        for threshold in (0.0, 0.1, 0.25, 0.45, 0.5, 0.999, 1.0, float(real.max()), float(real.max()) + 1):
            limit = q.raw_at_least(threshold)
            want = real >= np.float32(threshold)
            got = np.zeros_like(want) if limit is None else raws.astype(np.int32) >= limit
            assert (got == want).all(), (dtype, scale, zp, threshold, limit)


def test_nms_is_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    # box 1 overlaps box 0 (same class, IoU 0.68): dropped; box 2 is the same place, another class: kept
    assert nms(boxes, scores, classes, 0.45, 10).tolist() == [0, 2, 3]
    assert nms(boxes, scores, classes, 0.7, 10).tolist() == [0, 1, 2, 3]
    assert nms(boxes, scores, classes, 0.45, 2).tolist() == [0, 2]


# --- boxes normalised or in input pixels, layouts, letterbox ---------------------------------------

def graft(src: Path, dst: Path, *, nchw_input: bool = False, box_scale: float | None = None,
          transpose_output: bool = False) -> Path:
    """The real model with operators added around it: a TRANSPOSE in front ([1, 3, H, W] input), a
    MUL on the boxes (input pixels instead of normalised), a TRANSPOSE behind ([1, N, 84] output).
    The appended metadata is left out."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(src.read_bytes(), 0))
    g = m.subgraphs[0]
    m.signatureDefs = None

    def opcode(builtin: int) -> int:
        for i, c in enumerate(m.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
                return i
        c = fb.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, builtin, 1
        m.operatorCodes.append(c)
        return len(m.operatorCodes) - 1

    def tensor(name: str, shape, ttype: int, like=None, data: np.ndarray | None = None) -> int:
        t = fb.TensorT()
        t.name, t.shape, t.type = name.encode(), list(shape), ttype
        t.quantization = like.quantization if like is not None else None
        t.buffer = 0
        if data is not None:
            b = fb.BufferT()
            b.data = np.frombuffer(data.tobytes(), np.uint8)
            m.buffers.append(b)
            t.buffer = len(m.buffers) - 1
        g.tensors.append(t)
        return len(g.tensors) - 1

    def op(builtin: int, inputs, outputs, opt_type: int, options) -> fb.OperatorT:
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode(builtin), list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = opt_type, options
        return o

    if nchw_input:
        old = g.inputs[0]
        t = g.tensors[old]
        n, h, w, c = t.shape
        new = tensor("images_nchw", (n, c, h, w), t.type, like=t)
        perm = tensor("perm_nhwc", (4,), fb.TensorType.INT32, data=np.array([0, 2, 3, 1], np.int32))
        g.operators.insert(0, op(fb.BuiltinOperator.TRANSPOSE, [new, perm], [old],
                                 fb.BuiltinOptions.TransposeOptions, fb.TransposeOptionsT()))
        g.inputs = [new]
    out = g.outputs[0]
    shape = list(g.tensors[out].shape)
    if box_scale is not None:
        factor = np.ones((1, shape[1], 1), np.float32)
        factor[0, :4, 0] = box_scale
        k = tensor("box_scale", factor.shape, fb.TensorType.FLOAT32, data=factor)
        scaled = tensor("boxes_in_pixels", shape, fb.TensorType.FLOAT32)
        g.operators.append(op(fb.BuiltinOperator.MUL, [out, k], [scaled], fb.BuiltinOptions.MulOptions,
                              fb.MulOptionsT()))
        out = scaled
    if transpose_output:
        perm = tensor("perm_out", (3,), fb.TensorType.INT32, data=np.array([0, 2, 1], np.int32))
        moved = tensor("transposed", (shape[0], shape[2], shape[1]), g.tensors[out].type, like=g.tensors[out])
        g.operators.append(op(fb.BuiltinOperator.TRANSPOSE, [out, perm], [moved],
                              fb.BuiltinOptions.TransposeOptions, fb.TransposeOptionsT()))
        out = moved
    g.outputs = [out]
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(b.Output())
    return dst


def same_detections(a, b, box_tol: float = 1e-4) -> None:
    assert len(a) == len(b) and len(a) > 0, (a, b)
    for x, y in zip(a, b):
        assert (x.class_id, x.label) == (y.class_id, y.label)
        assert x.score == pytest.approx(y.score, abs=1e-5)
        assert x.box == pytest.approx(y.box, abs=box_tol)


@arm_slow
def test_boxes_in_input_pixels(tmp_path):
    """The same YOLO11n with its boxes multiplied by 640 (as exporters that do not normalise give
    them): found from the values, the detections are the same."""
    pixels = load_model(graft(YOLO11, tmp_path / "pixels.tflite", box_scale=640.0), COCO80, 2)
    normal = load_model(YOLO11, COCO80, 2)
    assert normal.normalised is True  # Ultralytics metadata says so
    assert pixels.normalised is None  # no metadata, float output: read from the values
    for name in ("pets.jpg", "kite_and_cold.jpg"):
        same_detections(pixels.run(image(name)).detections, normal.run(image(name)).detections)
        assert pixels.interp.get_tensor(pixels.layout.tensor.index)[0, :4].max() > 100  # pixels indeed


def test_pixel_boxes_from_the_quantization_range():
    m = load_model(YOLOV5, None, 1)
    assert m.normalised is True  # a uint8 output of scale 0.0045 cannot hold 640


@arm_slow
def test_transposed_output(tmp_path):
    """[1, 8400, 84] instead of [1, 84, 8400]: recognised and decoded the same."""
    moved = load_model(graft(YOLO11, tmp_path / "t.tflite", transpose_output=True), COCO80, 2)
    assert isinstance(moved, YoloV8) and moved.layout.tensor.shape == (1, 8400, 84)
    assert not moved.layout.channels_first
    normal = load_model(YOLO11, COCO80, 2)
    for name in ("pets.jpg", "kite_and_cold.jpg"):
        same_detections(moved.run(image(name)).detections, normal.run(image(name)).detections)


@arm_slow
@pytest.mark.parametrize("path", [YOLO11, YOLOV5], ids=["float32", "uint8"])
def test_nchw_input(tmp_path, path):
    """A [1, 3, H, W] input (newer exports): the same pixels land in the tensor, the same objects are found."""
    nchw = load_model(graft(path, tmp_path / "nchw.tflite", nchw_input=True), COCO80, 2)
    assert nchw.input.shape[1] == 3 and nchw.input_size == (640, 640)
    nhwc = load_model(path, COCO80, 2)
    for name in ("pets.jpg", "grace_hopper.bmp"):
        same_detections(nchw.run(image(name)).detections, nhwc.run(image(name)).detections)
    chw = nchw.interp.get_tensor(nchw.input.index)[0]
    hwc = nhwc.interp.get_tensor(nhwc.input.index)[0]
    np.testing.assert_array_equal(chw.transpose(1, 2, 0), hwc)


def test_letterbox_fit_is_exact():
    """A 768x576 frame in a 640x640 input: scaled by 5/6 to 640x480, 80 grey rows above and below.
    Tensor coordinates map back to frame pixels exactly."""
    m = load_model(YOLO11, None, 1)
    fit = m.prepare(Frame(0, 0.0, np.full((576, 768, 3), 200, np.uint8)))
    assert fit == Fit(1.0, 640 / 480, 0.0, 80 / 640)
    tensor = m.interp.get_tensor(m.input.index)[0]
    assert np.allclose(tensor[:80], PAD_VALUE / 255.0) and np.allclose(tensor[560:], PAD_VALUE / 255.0)
    assert np.allclose(tensor[80:560], 200 / 255.0)
    # Tensor pixels -> frame pixels: (x, y) -> (x * 768/640, (y - 80) * 576/480).
    tensor_px = np.array([[0, 80, 640, 560], [320, 320, 400, 440], [64, 128, 128, 200]], np.float32)
    frame_px = fit.to_frame(tensor_px / 640.0) * np.array([768, 576, 768, 576])
    want = np.array([[0, 0, 768, 576], [384, 288, 480, 432], [76.8, 57.6, 153.6, 144]])
    np.testing.assert_allclose(frame_px, want, atol=1e-3)
    # A portrait frame: grey columns left and right instead.
    assert m.prepare(Frame(1, 0.0, np.full((640, 320, 3), 10, np.uint8))) == Fit(2.0, 1.0, 0.25, 0.0)


@arm_slow
def test_letterbox_boxes_land_on_the_same_pixels(yolo):
    """The picture alone, or placed in a larger grey frame: the model sees nearly the same tensor,
    and the boxes, mapped back to source pixels, are where the objects are in each frame."""
    img = image("pets.jpg")
    h, w = img.shape[:2]
    big = np.full((h + 200, w, 3), PAD_VALUE, np.uint8)
    big[100:100 + h] = img
    a = [d for d in yolo.run(img, DetectFilter(threshold=0.5)).detections if d.label == "dog"]
    b = [d for d in yolo.run(big, DetectFilter(threshold=0.5)).detections if d.label == "dog"]
    assert len(a) == len(b) == 2
    for da in a:
        pa = np.array(da.pixel_box(w, h), float)
        pb = min((np.array(db.pixel_box(w, h + 200), float) - [0, 100, 0, 100] for db in b),
                 key=lambda p: np.abs(p - pa).sum())
        assert np.abs(pa - pb).max() <= 0.03 * max(w, h), (pa, pb)


@arm_slow
def test_stretch_when_asked():
    m = load_model(YOLO11, None, 1, resize="stretch")
    assert m.prepare(Frame(0, 0.0, np.zeros((576, 768, 3), np.uint8))) == Fit()
    assert any(d.label == "dog" for d in m.run(image("pets.jpg")).detections)


# --- labels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, member", [
    pytest.param(YOLO11, "metadata.json", marks=[pytest.mark.slow] if ON_ARM else []),
    (YOLO_NMS, "temp_meta.txt"),
    pytest.param(YOLOV8, "temp_meta.txt", marks=[pytest.mark.slow] if ON_ARM else []),
])
def test_labels_from_metadata(path, member):
    assert model_labels(path.read_bytes()).member == member
    m = load_model(path, None, 1)
    assert len(m.labels) == 80 and m.labels[0] == "person" and m.labels[16] == "dog" and m.labels[79] == "toothbrush"
    assert any(d.label == "dog" for d in m.run(image("pets.jpg")).detections)


@arm_slow
def test_labels_file_wins_over_metadata(tmp_path):
    names = [f"thing{i}" for i in range(80)]
    labels = tmp_path / "mine.txt"
    labels.write_text("\n".join(names) + "\n")
    m = load_model(YOLO11, labels, 1)
    assert {d.label for d in m.run(image("pets.jpg")).detections} == {"thing16"}


@arm_slow
def test_model_maker_label_file_in_the_model(tmp_path):
    """A label file packed into the model as an associated file (Model Maker, metadata writers)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("labelmap.txt", COCO80.read_text())
    packed = tmp_path / "yolov5n_with_labels.tflite"
    packed.write_bytes(YOLOV5.read_bytes() + buf.getvalue())
    m = load_model(packed, None, 1)
    assert m.labels[0] == "person" and len(m.labels) == 80
    assert "dog" in labels_of(m.run(image("pets.jpg")).detections)


@arm_slow
def test_no_labels_class_numbers_one_warning(caplog):
    caplog.set_level(logging.WARNING, "edgedetect")
    m = load_configured(ModelConfig(path=str(YOLOV5)), ModelFiles(YOLOV5, None, YOLOV5.name), threads=1)
    assert not m.labels
    assert "class 16" in labels_of(m.run(image("pets.jpg")).detections)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "classes are shown as numbers" in warnings[0].getMessage()


@pytest.mark.parametrize("text, counts", [("person\ncar\ndog\n", "3 labels (ids 0..2)"),
                                          (None, "80 labels (ids 0..89)")])
def test_wrong_labels_count_one_line(tmp_path, text, counts):
    """A labels file that does not fit the model: one line naming the file and both counts (the SSD's
    coco_labels.txt has 80 names but ids up to 89, as COCO numbers them)."""
    path = COCO_LABELS if text is None else tmp_path / "three.txt"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ModelError) as e:
        load_model(YOLOV8, path, 1)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and counts in msg and "80 classes" in msg


@arm_slow
def test_labels_with_background_line(tmp_path):
    path = tmp_path / "bg.txt"
    path.write_text("background\n" + COCO80.read_text())
    m = load_model(YOLOV5, path, 1)
    assert "dog" in labels_of(m.run(image("pets.jpg")).detections)


# --- Edge TPU model without its delegate ------------------------------------------------------------

def test_edgetpu_model_without_delegate_one_line():
    with pytest.raises(ModelError) as e:
        load_model(YOLOV5_EDGETPU, COCO80, 1)
    msg = str(e.value)
    assert "\n" not in msg and "edgetpu-custom-op" in msg and 'delegate = "edgetpu"' in msg
    assert "libedgetpu1-std" in msg


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgedetect", *args], capture_output=True, text=True, timeout=120)


@arm_slow
def test_run_edgetpu_model_without_delegate_exits_2():
    r = run_cli("run", "--model", str(YOLOV5_EDGETPU), "--source", str(VTEST), "--port", "0")
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1 and "compiled for the Coral Edge TPU" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


@arm_slow
def test_run_with_wrong_labels_exits_2(tmp_path):
    bad = tmp_path / "two.txt"
    bad.write_text("person\ncar\n")
    r = run_cli("run", "--model", str(YOLO11), "--labels", str(bad), "--source", str(VTEST), "--port", "0")
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1 and "2 labels (ids 0..1) for a model with 80 classes" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


@arm_slow
@pytest.mark.parametrize("name", ["yolo11n", "yolov8n-320-nms"])
def test_daemon_shows_people_without_labels_flag(name):
    """`edgedetect run --model <yolo>`: persons in /api/detections, named from the model's metadata."""
    with DaemonProcess("run", "--model", str(YOLOS[name][0]), "--source", str(VTEST), "--loop", "--port", "0") as d:
        found = d.wait_for(lambda: [x for x in d.json("/api/detections")["detections"] if x["label"] == "person"])
        x0, y0, x1, y1 = found[0]["box"]
        assert 0 <= x0 < x1 <= 768 and 0 <= y0 < y1 <= 576  # source pixels of the 768x576 clip
        code, _ = d.terminate()
    assert code == 0 and "Traceback" not in d.output()


# --- cost -------------------------------------------------------------------------------------------

@arm_slow
@pytest.mark.parametrize("name", list(YOLOS))
def test_decode_touches_only_candidates_above_the_threshold(name):
    """Decode + NMS stay cheap by working only on what can become a detection: boxes are
    dequantised, converted and suppressed for exactly the rows whose score reaches the threshold,
    counted here from the raw output on its own, a small share of all rows. Their time against
    invoke depends on the machine's load: `edgedetect bench` measures it (postprocess)."""
    m = load_model(YOLOS[name][0], COCO80, 1)
    t = m.layout.tensor
    for frame in vtest_frames((0, 280, 560)):
        assert m.run(frame, DetectFilter(threshold=0.25)).detections
        c = m.candidates(0.25)
        out = m.interp.get_tensor(t.index)[0]
        real = (out.astype(np.float32) - t.zero_point) * np.float32(t.scale) if t.scale else out.astype(np.float32)
        if m.family == "yolo-nms":
            scores = real[:, 4]
        elif m.family == "yolov5":
            scores = real[:, 5:].max(axis=1) * real[:, 4]
        else:
            scores = real[4:].max(axis=0) if m.layout.channels_first else real[:, 4:].max(axis=1)
        passing = int((scores >= np.float32(0.25)).sum())
        assert c.scores.size == c.boxes.shape[0] == passing, (name, c.scores.size, passing)
        assert passing <= 0.05 * scores.size and (c.scores >= np.float32(0.25) - 1e-6).all()


def test_every_yolo_family_is_registered():
    names = [f.family for f in FAMILIES]
    assert {"ssd", "yolo-nms", "yolov5", "yolov8", "classifier"} == set(names)
    assert names.index("yolo-nms") < names.index("yolov5") < names.index("yolov8")
    assert math.isclose(YoloV5.input_range[1], 1.0) and YoloV5.letterbox


# --- one call, one frame ------------------------------------------------------------------------------

def test_frames_in_turn_get_the_boxes_they_get_alone():
    """A portrait and a landscape picture through one letterboxing model in turn, as frames of two
    cameras would come: each gets exactly the findings (boxes and fit) that a model which never
    saw the other picture gives it, so no frame's place in the input reaches another's boxes."""
    portrait = Frame(0, 0.0, image("grace_hopper.bmp"))  # 512x600: grey columns left and right
    landscape = Frame(1, 0.0, image("kite_and_cold.jpg"))  # 1352x900: grey rows above and below
    flt = DetectFilter(threshold=0.3, max_detections=50)
    alone = {f.index: load_model(YOLO_NMS, COCO80, 1).detect(f, flt) for f in (portrait, landscape)}
    assert alone[0].fit.offset_x > 0 and alone[0].fit.offset_y == 0
    assert alone[1].fit.offset_y > 0 and alone[1].fit.offset_x == 0
    assert alone[0].detections and alone[1].detections
    shared = load_model(YOLO_NMS, COCO80, 1)
    for f in (portrait, landscape, landscape, portrait, landscape, portrait):
        assert shared.detect(f, flt) == alone[f.index], f.index  # times are not compared
