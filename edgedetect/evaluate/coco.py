"""COCO JSON: one file lists the images, the categories and the boxes ([x, y, width, height] in
pixels). The images are found by `file_name` next to the file, in `images/`, or in the folder given.
A bad annotation leaves its image out (one error line naming the key); a bad `images` or
`categories` list makes the whole file unusable (one line)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgedetect.errors import UserError
from edgedetect.evaluate.dataset import Box, Dataset, Sample, images_under

log = logging.getLogger("edgedetect.evaluate")

SNIFF_BYTES = 65536


def coco_files(root: Path) -> list[Path]:
    """The .json files at the top of `root` or in its annotations/ that look like COCO's."""
    out = []
    for p in sorted([*root.glob("*.json"), *root.glob("annotations/*.json")]):
        try:
            with open(p, "rb") as f:
                head = f.read(SNIFF_BYTES)
        except OSError:
            continue
        if b'"annotations"' in head or (b'"images"' in head and b'"categories"' in head):
            out.append(p)
    return out


def present(root: Path) -> bool:
    return bool(coco_files(root))


def _list(doc: dict, key: str, file: Path) -> list[dict]:
    items = doc.get(key)
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise UserError(f"{file}: {key}: expected a list of objects (COCO), got {type(items).__name__}")
    return items


def _id(item: dict, key: str, where: str, file: Path) -> int:
    v = item.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{file}: {where}.{key}: expected a whole-number id, got {v!r}")
    return v


def _box(ann: dict, where: str, file: Path, names: dict[Any, str]) -> Box:
    bbox = ann.get("bbox")
    if (not isinstance(bbox, list) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
            or not (bbox[2] > 0 and bbox[3] > 0)):
        raise ValueError(f"{file}: {where}.bbox: expected [x, y, width, height] with width and height above 0, "
                         f"got {json.dumps(bbox)[:80]}")
    if ann.get("category_id") not in names:
        raise ValueError(f"{file}: {where}.category_id: {ann.get('category_id')!r} is not in categories")
    area = ann.get("area")
    return Box(names[ann["category_id"]], *map(float, bbox), crowd=bool(ann.get("iscrowd", 0)),
               area=float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) and area > 0 else None)


def find_image(file: Path, root: Path, name: str) -> Path | None:
    for base in (root, root / "images", file.parent, file.parent.parent / "images"):
        p = base / name
        if p.is_file():
            return p
    return None


def read(path: Path) -> Dataset:
    if path.is_file():
        file, root = path, path.parent
    else:
        found = coco_files(path)
        if len(found) != 1:
            raise UserError(f"--data {path}: {len(found)} COCO files ({', '.join(p.name for p in found)}); "
                            "name one with --data FILE.json")
        file, root = found[0], path
    try:
        doc = json.loads(file.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise UserError(f"{file}:{e.lineno}: not valid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{file}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{file}: expected a COCO object with images, annotations and categories")
    cats = _list(doc, "categories", file)
    names: dict[Any, str] = {_id(c, "id", f"categories[{i}]", file): str(c.get("name") or c.get("id")) for i, c in enumerate(cats)}
    boxes: dict[Any, list[Box]] = {}
    bad: set[Any] = set()
    for i, ann in enumerate(_list(doc, "annotations", file)):
        image_id = _id(ann, "image_id", f"annotations[{i}]", file)
        try:
            boxes.setdefault(image_id, []).append(_box(ann, f"annotations[{i}]", file, names))
        except ValueError as e:
            if image_id not in bad:
                log.error("%s; image %s left out", e, image_id)
            bad.add(image_id)
    samples, missing, listed = [], 0, set()
    for i, img in enumerate(_list(doc, "images", file)):
        image_id = _id(img, "id", f"images[{i}]", file)
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            raise UserError(f"{file}: images[{i}].file_name: expected the image's file name, got {name!r}")
        if image_id in bad:
            continue
        found = find_image(file, root, name)
        if found is None:
            log.warning("%s: images[%d] %r: image not found below %s; left out", file, i, name, root)
            missing += 1
            continue
        listed.add(found.resolve())
        w, h = img.get("width"), img.get("height")
        size = (w, h) if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 else None
        samples.append(Sample(found, image_id, tuple(boxes.get(image_id, ())), size))
    data = Dataset(root, "coco", samples, list(names.values()), malformed=len(bad), orphans=missing)
    others = sum(1 for p in images_under(root) if p.resolve() not in listed)
    if others:
        data.notes.append(f"{others} images below {root} are not in {file.name}: not scored")
        log.info("%s", data.notes[-1])
    return data


def ground_truth(done: list[tuple[Sample, tuple[int, int]]], classes: dict[str, str], root: Path) -> dict:
    """The pictures scored and their boxes as a COCO annotation file, in the model's class names:
    `classes` maps each of the labels' names scored to the model's (others are left out)."""
    ids = {name: i for i, name in enumerate(dict.fromkeys(classes.values()), start=1)}
    images, anns = [], []
    for sample, (w, h) in done:
        try:
            file_name = str(sample.image.relative_to(root))
        except ValueError:
            file_name = str(sample.image)
        images.append({"id": sample.image_id, "width": w, "height": h, "file_name": file_name})
        sx, sy = (w, h) if sample.normalised else (1, 1)
        for b in sample.boxes:
            if b.label not in classes:
                continue
            box = [round(b.x * sx, 3), round(b.y * sy, 3), round(b.w * sx, 3), round(b.h * sy, 3)]
            anns.append({"id": len(anns) + 1, "image_id": sample.image_id, "category_id": ids[classes[b.label]],
                         "bbox": box, "area": b.area if b.area is not None else box[2] * box[3],
                         "iscrowd": int(b.crowd)})
    return {"info": {"description": "edgedetect eval: the ground truth scored"}, "images": images,
            "annotations": anns, "categories": [{"id": i, "name": n} for n, i in ids.items()]}


def results(found: list[dict], gt: dict) -> list[dict]:
    """A model's detections of the classes in `gt` as COCO results (category ids for labels)."""
    ids = {c["name"]: c["id"] for c in gt["categories"]}
    return [{"image_id": r["image_id"], "category_id": ids[r["label"]], "bbox": r["bbox"], "score": r["score"]}
            for r in found if r["label"] in ids]
