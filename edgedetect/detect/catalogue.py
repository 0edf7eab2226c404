"""The model catalogue: named models and media, pinned URLs, sha256-checked files.

A name resolves to a file by looking, in order, in the mirror directories (`--models-dir`,
`EDGEDETECT_MODELS_DIR`, `:`-separated), then the cache (`EDGEDETECT_CACHE_DIR`, else
`$XDG_CACHE_HOME/edgedetect`), and only `pull` downloads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

from edgedetect.errors import UserError

ROLES = ("model", "labels", "video")


@dataclass(frozen=True, slots=True)
class RemoteFile:
    role: str
    url: str
    sha256: str
    aliases: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name

    def names(self) -> tuple[str, ...]:
        return (self.filename, *self.aliases)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    kind: str
    description: str
    files: tuple[RemoteFile, ...]
    default: bool = False
    delegate: str = ""  # the accelerator the model is compiled for ("edgetpu"), "" for the CPU
    variants: dict[str, str] = field(default_factory=dict)  # accelerator -> the entry compiled for it

    def file(self, role: str) -> RemoteFile | None:
        return next((f for f in self.files if f.role == role), None)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A catalogue entry's files on disk, by role."""

    entry: Entry
    paths: dict[str, Path]


def _parse(data: dict, origin: str) -> dict[str, Entry]:
    entries = {}
    for name, body in data.items():
        files = []
        for role in ROLES:
            if role in body:
                f = body[role]
                files.append(RemoteFile(role, f["url"], f["sha256"].lower(), tuple(f.get("aliases", ()))))
        if not files:
            raise UserError(f"{origin}: entry {name!r} has no model, labels or video file")
        entries[name] = Entry(name, body.get("kind", "detector"), body.get("description", ""), tuple(files),
                              bool(body.get("default", False)), str(body.get("delegate", "")),
                              {str(k): str(v) for k, v in body.get("variants", {}).items()})
    for name, entry in entries.items():
        for accel, other in entry.variants.items():
            if other not in entries or entries[other].delegate != accel:
                raise UserError(f"{origin}: entry {name!r} names {other!r} as its {accel} variant, "
                                f"but there is no such entry with delegate = {accel!r}")
    return entries


def _catalogue_text() -> str:
    """models/catalogue.toml: installed as package data, or read from a source checkout that
    runs without being installed (PYTHONPATH=repo)."""
    try:
        return resources.files("edgedetect.catalogue_data").joinpath("catalogue.toml").read_text("utf-8")
    except ModuleNotFoundError:
        return (Path(__file__).resolve().parents[2] / "models" / "catalogue.toml").read_text("utf-8")


def mirror_dirs(cli_dirs: str | None = None) -> list[Path]:
    spec = ":".join(s for s in (cli_dirs, os.environ.get("EDGEDETECT_MODELS_DIR")) if s)
    return [Path(p).expanduser() for p in spec.split(":") if p]


def cache_dir() -> Path:
    explicit = os.environ.get("EDGEDETECT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgedetect"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Catalogue:
    def __init__(self, entries: dict[str, Entry], mirrors: list[Path], cache: Path):
        self.entries = entries
        self.mirrors = mirrors
        self.cache = cache

    @classmethod
    def load(cls, models_dir: str | None = None) -> "Catalogue":
        return cls(_parse(tomllib.loads(_catalogue_text()), "catalogue.toml"), mirror_dirs(models_dir), cache_dir())

    def get(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise UserError(f"unknown model or media {name!r} (expected one of: {', '.join(self.entries)})") from None

    def cached_path(self, entry: Entry, f: RemoteFile) -> Path:
        return self.cache / entry.name / f.filename

    def find(self, entry: Entry, f: RemoteFile) -> Path | None:
        """A verified local copy, or None. A mirror copy with the wrong checksum is an error:
        silently using another file would be worse than stopping."""
        for d in self.mirrors:
            for name in f.names():
                p = d / name
                if p.is_file():
                    self._verify(p, f)
                    return p
        p = self.cached_path(entry, f)
        if p.is_file():
            self._verify(p, f)
            return p
        return None

    def _verify(self, path: Path, f: RemoteFile) -> None:
        got = sha256_of(path)
        if got != f.sha256:
            raise UserError(f"{path}: sha256 {got[:12]}... does not match the catalogue's {f.sha256[:12]}... "
                            f"(expected {f.filename} from {f.url}); delete the file and pull again")

    def resolve(self, name: str) -> Resolved:
        """Local files for an entry, without touching the network."""
        entry = self.get(name)
        paths = {}
        for f in entry.files:
            p = self.find(entry, f)
            if p is None:
                raise UserError(
                    f"{name}: {f.filename} is not available locally; run 'edgedetect models pull {name}' "
                    f"or put the file (from {f.url}) in a directory named by --models-dir or EDGEDETECT_MODELS_DIR"
                )
            paths[f.role] = p
        return Resolved(entry, paths)

    def pull(self, name: str, timeout: float = 60.0) -> Resolved:
        entry = self.get(name)
        paths = {}
        for f in entry.files:
            p = self.find(entry, f)
            paths[f.role] = p if p is not None else self._download(entry, f, timeout)
        return Resolved(entry, paths)

    def _download(self, entry: Entry, f: RemoteFile, timeout: float) -> Path:
        dest = self.cached_path(entry, f)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(f.url, timeout=timeout) as resp:
                for block in iter(lambda: resp.read(1 << 16), b""):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != f.sha256:
                raise UserError(f"{f.url}: downloaded file has sha256 {h.hexdigest()[:12]}..., "
                                f"expected {f.sha256[:12]}...; not saved")
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
            raise UserError(
                f"cannot download {f.url} ({reason}); download it by hand and put it in a directory "
                f"named by --models-dir or EDGEDETECT_MODELS_DIR, or at {dest}"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
