"""The labels' class names mapped to a model's: `--map old=new` first, then the same name (case
and blanks aside), then VOC's spellings of COCO classes. A class no model label
answers to is left out of that model's scores, neither found nor missed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from edgedetect.errors import UserError

# Pascal VOC's names for six of its classes that COCO (and so every COCO-trained model) spells otherwise.
VOC_TO_COCO = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}


def key(name: str) -> str:
    return " ".join(name.split()).lower()


def parse_maps(items: Iterable[str]) -> dict[str, str]:
    """`--map old=new` values as {old: new}."""
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UserError(f"--map {item!r}: expected old=new (a class name of the labels = the model's name for it)")
        out[key(old)] = new.strip()
    return out


@dataclass(frozen=True)
class LabelPlan:
    """How one model's labels meet the dataset's: the model's name for each class it can be
    scored on, and the dataset's classes it cannot produce."""

    rename: dict[str, str]  # dataset name -> the model's label for it
    left_out: tuple[str, ...] = ()  # dataset names no model label answers to
    mapped: dict[str, str] = field(default_factory=dict)  # the renames that were not the same name

    @property
    def classes(self) -> list[str]:
        """The model's names of the classes scored, in the dataset's order, each once."""
        return list(dict.fromkeys(self.rename.values()))


def plan(dataset_names: Iterable[str], model_labels: Iterable[str], maps: dict[str, str] | None = None) -> LabelPlan:
    by_key: dict[str, str] = {}
    for label in model_labels:
        by_key.setdefault(key(label), label)
    maps = maps or {}
    rename: dict[str, str] = {}
    mapped: dict[str, str] = {}
    left_out = []
    for name in dataset_names:
        k = key(name)
        target = maps.get(k) or (name if k in by_key else VOC_TO_COCO.get(k, name))
        label = by_key.get(key(target))
        if label is None:
            left_out.append(name)
            continue
        rename[name] = label
        if key(label) != k:
            mapped[name] = label
    return LabelPlan(rename, tuple(left_out), mapped)
