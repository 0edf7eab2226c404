"""Frame sources behind one interface (see base.Source), and the factory that picks one."""

from __future__ import annotations

from pathlib import Path

from edgedetect.config import SourceConfig
from edgedetect.detect.catalogue import Catalogue
from edgedetect.errors import SourceError
from edgedetect.sources.base import Capture, Source
from edgedetect.sources.images import IMAGE_SUFFIXES, ImageFiles
from edgedetect.sources.mjpeg import MjpegStream
from edgedetect.sources.picam import PiCamera, lores_size_for
from edgedetect.sources.stream import NetworkStream
from edgedetect.sources.video import LiveCapture, VideoFile

__all__ = ["Capture", "Source", "describe_uri", "open_source"]

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://")
EXPECTED = "picam, demo, a camera index, /dev/videoN, an rtsp:// or http:// URL, or a video, image or folder path"


def describe_uri(uri: str) -> str:
    """What kind of source a URI names: picam, demo, camera, stream, images or video."""
    if uri in ("picam", "demo"):
        return uri
    if uri.isdigit() or uri.startswith("/dev/video"):
        return "camera"
    if uri.startswith(STREAM_SCHEMES):
        return "stream"
    p = Path(uri)
    if p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES:
        return "images"
    return "video"


def make_source(cfg: SourceConfig, catalogue: Catalogue | None = None,
                model_size: tuple[int, int] | None = None, keep_aspect: bool = False,
                record: bool = False) -> Source:
    """Build (not open) the source a config names. A camera that can scale in hardware makes a
    second, smaller image for a model of `model_size` (its aspect kept for letterboxing models).
    With `record`, a camera that gives H.264 of its own (the Pi camera's hardware encoder, an RTSP
    camera's stream) hands its packets on with each frame, for clips copied rather than encoded."""
    if not cfg.uri.strip():  # Path("") is the current directory: never play that by accident
        raise SourceError(f"source: empty (expected {EXPECTED})")
    kind = describe_uri(cfg.uri)
    if kind == "picam":
        lores = lores_size_for(model_size, (cfg.width, cfg.height) if keep_aspect else None) if model_size else None
        return PiCamera(cfg.width, cfg.height, cfg.fps, lores, record=record, record_mbps=cfg.record_mbps)
    if kind == "demo":
        cat = catalogue or Catalogue.load()
        src = VideoFile(cat.resolve("demo").paths["video"], pace=cfg.pace, loop=True)
        src.name = "demo"
        return src
    if cfg.uri.startswith(("http://", "https://")):
        return MjpegStream(cfg.uri, record=record)  # anything but MJPEG goes on to NetworkStream
    if kind == "stream":
        return NetworkStream(cfg.uri, cfg.record_uri, cfg.rtsp_transport, cfg.hwaccel, record=record)
    if kind == "camera":
        return LiveCapture(cfg.uri, cfg.width, cfg.height, cfg.fps)
    if kind == "images":
        return ImageFiles(cfg.uri, pace=cfg.pace, loop=cfg.loop)
    if not Path(cfg.uri).exists():
        raise SourceError(f"{cfg.uri}: source not found (expected {EXPECTED})")
    return VideoFile(cfg.uri, pace=cfg.pace, loop=cfg.loop)


def open_source(cfg: SourceConfig, catalogue: Catalogue | None = None,
                model_size: tuple[int, int] | None = None, keep_aspect: bool = False) -> Source:
    src = make_source(cfg, catalogue, model_size, keep_aspect)
    src.open()
    return src
