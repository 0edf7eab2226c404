"""From [model] in the config to a loaded model: a catalogue name or a path, its labels file,
the accelerator, the family."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from edgedetect.config import Config, ModelConfig, camera_configs
from edgedetect.detect.catalogue import Catalogue
from edgedetect.detect.delegates import load_delegates
from edgedetect.detect.families import load_model
from edgedetect.detect.model import DetectFilter, Model
from edgedetect.errors import ModelError, UserError

log = logging.getLogger("edgedetect.detect")


@dataclass(frozen=True, slots=True)
class ModelFiles:
    model: Path
    labels: Path | None
    name: str
    sha256: str = ""  # the catalogue's pin for the model file, when the catalogue knows it
    pinned_by_name: bool = True  # False: a path whose file name only matches a catalogue file


def resolve_model(mc: ModelConfig, catalogue: Catalogue, download: bool = True) -> ModelFiles:
    """A catalogue name or a path to a .tflite, and its labels file."""
    labels = Path(mc.labels) if mc.labels else None
    if mc.path in catalogue.entries:
        entry = catalogue.get(mc.path)
        if entry.kind not in ("detector", "classifier"):
            raise UserError(f"model.path: {mc.path!r} is a {entry.kind}, not a model")
        name = entry.variants.get(mc.delegate, mc.path)  # e.g. the Edge TPU build when delegate = "edgetpu"
        found = catalogue.pull(name) if download else catalogue.resolve(name)
        pin = found.entry.file("model")
        return ModelFiles(found.paths["model"], labels or found.paths.get("labels"), name, pin.sha256 if pin else "")
    path = Path(mc.path).expanduser()
    if not path.exists():
        raise ModelError(f"{path}: model file not found (expected a .tflite file or one of: "
                         f"{', '.join(n for n, e in catalogue.entries.items() if e.kind != 'video')})")
    if labels is None:
        labels = next((p for p in labels_candidates(path) if p.is_file()), None)
    known = next((f for e in catalogue.entries.values() for f in e.files
                  if f.role == "model" and path.name in f.names()), None)
    return ModelFiles(path, labels, path.name, known.sha256 if known else "", pinned_by_name=False)


def check_pin(files: ModelFiles, content: bytes) -> None:
    """The bytes the interpreter runs against the catalogue's sha256. The catalogue checked the
    file when it found it; this checks what was then read, once, into memory (a file rewritten
    in between would otherwise run unnoticed). A model the catalogue resolved must match: a
    one-line ModelError. A path that only shares a catalogue file's name may be the user's own
    model: one warning line."""
    if not files.sha256:
        return
    got = hashlib.sha256(content).hexdigest()
    if got == files.sha256:
        return
    if files.pinned_by_name:
        raise ModelError(f"{files.model}: the model read has sha256 {got[:12]}..., not the catalogue's "
                         f"{files.sha256[:12]}... for {files.name} (the file changed while it was read?); "
                         f"delete it and run 'edgedetect models pull {files.name}'")
    log.warning("%s: sha256 %s... differs from the catalogue's %s... for a file of this name; "
                "running it as the model given", files.model, got[:12], files.sha256[:12])


def labels_candidates(model: Path) -> list[Path]:
    stem = model.with_suffix("")
    return [Path(f"{stem}.txt"), Path(f"{stem}_labels.txt"), Path(f"{stem}.labels.txt"), model.parent / "labels.txt"]


def load_configured(mc: ModelConfig, files: ModelFiles, threads: int | None = None) -> Model:
    """The model that [model] describes, on the CPU or its accelerator."""
    model = load_model(files.model, files.labels, threads if threads is not None else (mc.threads or None),
                       mc.input_range, family=mc.family, resize=mc.resize,
                       delegates=load_delegates(mc.delegate, mc.delegate_options))
    check_pin(files, model.content)  # the bytes the interpreter runs, read once
    if model.kind == "detector" and not model.labels:
        log.warning("%s: no labels file found; classes are shown as numbers", files.model)
    return model


def detect_filter(cfg: Config) -> DetectFilter:
    """[detect] as the filter a model applies (the daemon's, and a SIGHUP reload's)."""
    d = cfg.detect
    # Weak detections serve only the tracker, which runs only for MQTT events and the store.
    tracking = cfg.mqtt.enabled or any(c.record.enabled for _, c in camera_configs(cfg))
    weak = cfg.track.low_score if tracking and cfg.track.low_score < d.threshold else None
    return DetectFilter(d.threshold, frozenset(d.allow), frozenset(d.deny), d.max_detections, d.iou, weak)
