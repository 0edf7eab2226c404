"""`edgedetect eval` on real labelled pictures (../shared/labelled/voc-toy) and real models: the
scores are COCO's own (golden: cocoapi's published fake-detections result), the formats read
alike, bad labels are one line each, Ctrl-C gives the partial table."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import pytest

from conftest import COCO_LABELS, MODELS, ROOT, SHARED
from edgedetect.cli import main

VOC_TOY = SHARED / "labelled" / "voc-toy"
YOLOV8N = MODELS / "yolov8n_full_integer_quant.tflite"
DATA = Path(__file__).parent / "data" / "eval"
# cocoapi's results/val2014_fake_eval_res.txt, type=bbox: its twelve summary numbers.
COCOAPI_BBOX = [0.505, 0.697, 0.573, 0.586, 0.519, 0.501, 0.387, 0.594, 0.595, 0.640, 0.566, 0.564]


def voc_toy_copy(dst: Path, names: list[str] | None = None) -> list[Path]:
    """Some of voc-toy's pictures (all by default) with their XML beside them, as LabelImg saves."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for img in sorted((VOC_TOY / "images").iterdir()):
        if names is not None and img.stem not in names:
            continue
        shutil.copy(img, dst / img.name)
        xml = VOC_TOY / "annotations" / f"{img.stem}.xml"
        if xml.exists():
            shutil.copy(xml, dst / xml.name)
        out.append(dst / img.name)
    return out


def voc_to_yolo(dst: Path) -> None:
    """voc-toy converted to YOLO txt (Ultralytics layout: images/, labels/, classes.txt), written
    plainly here from the XML, independent of the package's readers."""
    (dst / "images").mkdir(parents=True)
    (dst / "labels").mkdir()
    names: list[str] = []
    for img in sorted((VOC_TOY / "images").iterdir()):
        (dst / "images" / img.name).symlink_to(img)
        xml = VOC_TOY / "annotations" / f"{img.stem}.xml"
        if not xml.exists():
            continue
        root = ET.parse(xml).getroot()
        w, h = float(root.findtext("size/width")), float(root.findtext("size/height"))
        lines = []
        for obj in root.iter("object"):
            name = obj.findtext("name")
            if name not in names:
                names.append(name)
            x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            lines.append(f"{names.index(name)} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                         f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
        (dst / "labels" / f"{img.stem}.txt").write_text("\n".join(lines) + "\n")
    (dst / "labels" / "classes.txt").write_text("\n".join(names) + "\n")


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow  # pycocotools takes 1-2 s over 100 pictures x 80 classes here
def test_golden_cocoapi_fake_detections():
    """cocoapi's fake detections on their 100 images score what cocoapi published."""
    from edgedetect.evaluate import scoring

    gt = json.loads((DATA / "instances_val2014_100_boxes.json").read_text())
    results = json.loads((DATA / "instances_val2014_fakebbox100_results.json").read_text())
    s = scoring.score(gt, results, threshold=0.5)
    assert (round(s.map, 3), round(s.map50, 3)) == (0.505, 0.697)
    assert [round(x, 3) for x in s.stats] == COCOAPI_BBOX
    assert len(s.classes) == len({a["category_id"] for a in gt["annotations"] if not a["iscrowd"]})
    assert 0 < s.at_threshold.recall < s.best_f1.recall <= 1 and s.best_f1.threshold < 0.5


def test_bad_labels_are_one_line_each(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A malformed XML, a YOLO line of 4 values: an error naming file and line, that picture left
    out; a label file without its picture: a warning naming it; pictures without labels: one line."""
    from edgedetect.evaluate.formats import read_dataset

    voc = tmp_path / "voc"
    voc_toy_copy(voc, ["2007_000549", "2007_003525", "2010_003115", "2012_003445"])  # the last two have no XML
    bad = voc / "2007_003525.xml"
    lines = bad.read_text().splitlines()
    assert lines[6].strip() == "<image>flickr</image>"
    lines[6] = "\t\t<image>flickr</imag>"  # line 7: a closing tag mistyped
    bad.write_text("\n".join(lines))
    (voc / "annotations").mkdir()
    shutil.copy(VOC_TOY / "annotations" / "2007_000733.xml", voc / "annotations" / "ghost.xml")
    caplog.set_level(logging.INFO, "edgedetect.evaluate")
    data = read_dataset(voc)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said.count(("ERROR", f"{bad}:7: malformed XML (mismatched tag); 2007_003525.jpg left out")) == 1
    assert [m for lvl, m in said if lvl == "WARNING"] == [
        f"{voc / 'annotations' / 'ghost.xml'}: label file without its image (expected an image of the same name "
        "beside it); ignored"]
    assert ("INFO", "2 of 4 images have no label file: scored as pictures with no objects") in said
    assert len(said) == 3
    assert (data.format, len(data.samples), data.malformed, data.orphans, data.unlabelled) == ("voc", 3, 1, 1, 2)
    assert [len(s.boxes) for s in data.samples] == [1, 0, 0]

    yolo = tmp_path / "yolo"
    voc_to_yolo(yolo)
    label = yolo / "labels" / "2007_005688.txt"
    first, second = label.read_text().splitlines()
    label.write_text(f"{first}\n{second.rsplit(' ', 1)[0]}\n")  # the second box loses its height
    caplog.clear()
    data = read_dataset(yolo)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{label}:2: 4 values: expected 5 (class cx cy w h); 2007_005688.jpg left out"]
    assert (data.format, len(data.samples), data.malformed, data.names) == ("yolo", 11, 1, ["cat"])


def test_names_mapped_to_the_models_and_the_rest_left_out(tmp_path: Path):
    """VOC's spellings find COCO's, --map adds more, a class the model lacks is listed and left out
    of the ground truth scored (neither found nor missed)."""
    from edgedetect.detect.labels import read_labels
    from edgedetect.evaluate import coco, labelmap
    from edgedetect.evaluate.formats import read_dataset

    (img,) = voc_toy_copy(tmp_path, ["2007_000549"])
    xml = tmp_path / "2007_000549.xml"
    tree = ET.parse(xml)
    obj = tree.getroot().find("object")
    for name in ("tvmonitor", "sofa", "kitty", "zebra crossing", "Cat"):
        extra = ET.fromstring(ET.tostring(obj))
        extra.find("name").text = name
        tree.getroot().append(extra)
    tree.write(xml)
    data = read_dataset(tmp_path)
    assert data.names == ["cat", "tvmonitor", "sofa", "kitty", "zebra crossing", "Cat"]
    plan = labelmap.plan(data.names, read_labels(COCO_LABELS).values(), labelmap.parse_maps(["kitty=cat"]))
    assert plan.rename == {"cat": "cat", "tvmonitor": "tv", "sofa": "couch", "kitty": "cat", "Cat": "cat"}
    assert plan.left_out == ("zebra crossing",)
    gt = coco.ground_truth([(data.samples[0], (375, 500))], plan.rename, tmp_path)
    assert [c["name"] for c in gt["categories"]] == ["cat", "tv", "couch"]
    assert len(gt["annotations"]) == 5  # all but the zebra crossing


def test_without_the_extra_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """pycocotools missing: one line saying how to install it, before any model is loaded."""
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # what Python does for a module it cannot import
    assert main(["eval", "--data", str(VOC_TOY)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edgedetect: error: edgedetect eval needs pycocotools, which is not installed: "
                   "pip install 'edgedetect[eval]'"]


@pytest.mark.slow
def test_two_models_table_plot_and_coco_json(tmp_path: Path, capsys: pytest.CaptureFixture):
    """The issue's own command: the table, the plot, the COCO files, and the saved files scored
    again by the other library (faster-coco-eval) give the numbers of the table."""
    from edgedetect.evaluate import scoring

    png, saved = tmp_path / "pr.png", tmp_path / "saved"
    capsys.readouterr()
    assert main(["eval", "--data", str(VOC_TOY), "--model", "ssd-mobilenet-v2-coco", "--model", str(YOLOV8N),
                 "--plot", str(png), "--save-detections", str(saved)]) == 0
    table = capsys.readouterr().out
    assert "12 of 12 pictures scored (voc" in table and "AP per class:" in table
    picture = cv2.imread(str(png))
    assert picture.shape == (640, 900, 3) and (picture != 255).any(axis=2).mean() > 0.02
    for slug in ("ssd-mobilenet-v2-coco", YOLOV8N.name):
        gt = json.loads((saved / f"{slug}.ground_truth.json").read_text())
        found = json.loads((saved / f"{slug}.detections.json").read_text())
        assert len(gt["images"]) == 12 and len(gt["annotations"]) == 12 and found
        ours = scoring.evaluate(gt, found, "pycocotools").stats
        other = scoring.evaluate(gt, found, "faster-coco-eval").stats
        assert list(ours) == pytest.approx(list(other), abs=1e-12)
        row = next(line for line in table.splitlines() if line.startswith(slug + " "))
        assert row.split()[1:3] == [f"{ours[0]:.3f}", f"{ours[1]:.3f}"]


@pytest.mark.slow
def test_yolo_copy_scores_the_same(tmp_path: Path, capsys: pytest.CaptureFixture):
    """voc-toy converted to YOLO txt gives the same mAP to four decimals."""
    voc_to_yolo(tmp_path / "yolo")
    model = ["--model", "ssd-mobilenet-v2-coco"]
    voc = run_json(capsys, "--data", str(VOC_TOY), *model)["models"][0]
    yolo_report = run_json(capsys, "--data", str(tmp_path / "yolo"), *model)
    yolo = yolo_report["models"][0]
    assert yolo_report["format"] == "yolo" and yolo_report["scored_images"] == 12
    assert voc["map"] is not None and voc["map"] > 0.3
    assert (round(yolo["map"], 4), round(yolo["map50"], 4)) == (round(voc["map"], 4), round(voc["map50"], 4))


@pytest.mark.slow
def test_ctrl_c_prints_the_partial_table(tmp_path: Path):
    """A real SIGINT to a running eval: the table of the pictures done, exit status 130, no traceback."""
    data = tmp_path / "many"
    for n in range(10):  # 120 pictures: far more than are done by the time the signal comes
        for img in voc_toy_copy(tmp_path / "one"):
            (data / f"{n}").mkdir(parents=True, exist_ok=True)
            shutil.copy(img, data / f"{n}" / img.name)
            if img.with_suffix(".xml").exists():
                shutil.copy(img.with_suffix(".xml"), data / f"{n}" / img.with_suffix(".xml").name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edgedetect", "eval", "--data", str(data), "--model", str(YOLOV8N)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    err = []
    for line in proc.stderr:
        err.append(line)
        if "scoring 120 pictures" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=120)
    err.append(rest)
    assert proc.returncode == 130, "".join(err)
    assert "Traceback" not in "".join(err)
    assert "interrupted: scoring the pictures done so far" in "".join(err)
    first = out.splitlines()[0]
    done = int(first.split(" of ")[0])
    assert first.startswith(f"{done} of 120 pictures scored") and done < 120
    assert f"INTERRUPTED after {done} pictures" in out and YOLOV8N.name in out
