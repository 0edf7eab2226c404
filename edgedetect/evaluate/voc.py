"""Pascal VOC XML as LabelImg writes it: one `.xml` per image, beside it or in `annotations/`.

Read with expat directly rather than ElementTree so that every element keeps its line number: a
box with a coordinate that is not a number is reported at its line, not only at the file."""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

from edgedetect.evaluate.dataset import Box, Dataset, LabelError, files_under, pair, swapped_folder

# Folders of images and where VOC tools put the XML of each (VOC's own JPEGImages/Annotations).
LABEL_FOLDERS = {"images": ("annotations", "Annotations"), "JPEGImages": ("Annotations", "annotations")}
MAX_BYTES = 4 * 2**20  # LabelImg writes a few hundred bytes an object; a larger file is not one of its


@dataclass
class Element:
    tag: str
    line: int
    text: list[str] = field(default_factory=list)
    children: list["Element"] = field(default_factory=list)

    def child(self, tag: str) -> "Element | None":
        return next((c for c in self.children if c.tag == tag), None)

    def value(self) -> str:
        return "".join(self.text).strip()


def present(root: Path) -> bool:
    return bool(files_under(root, ".xml"))


def candidates(image: Path, root: Path) -> list[Path]:
    return ([image.with_suffix(".xml")]
            + [p.with_suffix(".xml") for p in swapped_folder(image, root, LABEL_FOLDERS)]
            + [root / d / f"{image.stem}.xml" for d in ("annotations", "Annotations")])


def parse_xml(path: Path) -> Element:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise LabelError(path, None, f"{path.stat().st_size // 2**20} MB is too large for a label file "
                                         f"(expected a Pascal VOC .xml under {MAX_BYTES // 2**20} MB)")
        data = path.read_bytes()
    except OSError as e:
        raise LabelError(path, None, f"cannot read it ({e.strerror or e})") from None
    parser = xml.parsers.expat.ParserCreate()
    top = Element("", 0)
    stack = [top]

    def start(tag: str, _attrs: dict) -> None:
        el = Element(tag, parser.CurrentLineNumber)
        stack[-1].children.append(el)
        stack.append(el)

    def refuse_entity(*_args: object) -> None:
        # Entities are how XML bombs expand; LabelImg never declares any.
        raise LabelError(path, parser.CurrentLineNumber, "entity declarations are not accepted in a label file")

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda _tag: stack.pop()
    parser.CharacterDataHandler = lambda text: stack[-1].text.append(text)
    parser.EntityDeclHandler = refuse_entity
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise LabelError(path, e.lineno, f"malformed XML ({xml.parsers.expat.ErrorString(e.code)})") from None
    if len(top.children) != 1 or top.children[0].tag != "annotation":
        got = top.children[0] if top.children else None
        raise LabelError(path, got.line if got else None,
                         f"expected <annotation> as the root element (Pascal VOC), got <{got.tag if got else ''}>")
    return top.children[0]


def number(path: Path, el: Element | None, parent: Element, tag: str) -> float:
    if el is None:
        raise LabelError(path, parent.line, f"<{parent.tag}> without <{tag}>")
    try:
        return float(el.value())
    except ValueError:
        raise LabelError(path, el.line, f"<{tag}> {el.value()!r}: expected a number") from None


def parse(path: Path) -> tuple[tuple[Box, ...], tuple[int, int] | None]:
    root = parse_xml(path)
    size = None
    if (sz := root.child("size")) is not None:
        w, h = (number(path, sz.child(k), sz, k) for k in ("width", "height"))
        size = (int(w), int(h)) if w > 0 and h > 0 else None  # some tools write 0 when they did not know
    boxes = []
    for obj in (c for c in root.children if c.tag == "object"):
        name = obj.child("name")
        if name is None or not name.value():
            raise LabelError(path, obj.line, "<object> without a <name>")
        bb = obj.child("bndbox")
        if bb is None:
            raise LabelError(path, obj.line, f"<object> {name.value()!r} without a <bndbox>")
        x0, y0, x1, y1 = (number(path, bb.child(k), bb, k) for k in ("xmin", "ymin", "xmax", "ymax"))
        if not (x1 > x0 and y1 > y0):
            raise LabelError(path, bb.line, f"box {x0:g},{y0:g},{x1:g},{y1:g}: expected xmin < xmax and ymin < ymax")
        difficult = obj.child("difficult")
        boxes.append(Box(name.value(), x0, y0, x1 - x0, y1 - y0,
                         crowd=difficult is not None and difficult.value() == "1"))
    return tuple(boxes), size


def read(root: Path) -> Dataset:
    return pair(root, "voc", files_under(root, ".xml"), lambda image: candidates(image, root), parse)
