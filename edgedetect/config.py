"""Configuration: one TOML file validated into dataclasses; CLI flags override it.

Every field's type and range is declared once, here; the loader checks TOML and CLI values
against the same declarations, so both give the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedetect.errors import ConfigError, shorten
from edgedetect.geometry import MAX_MASKS, MAX_ZONES, NAME_RE, polygon_problem

DEFAULT_CONFIG_PATH = Path("/etc/edgedetect/edgedetect.toml")

log = logging.getLogger("edgedetect.config")


def _f(default: Any, help: str, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None) -> Any:
    meta = {"help": help, "min": lo, "max": hi, "choices": choices}
    if isinstance(default, (list, tuple, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SourceConfig:
    uri: str = _f("picam", "picam | demo | camera index or /dev/videoN | rtsp:// or http:// URL | video, image or folder path")
    pace: bool = _f(True, "play files at their own frame rate (false: as fast as possible)")
    loop: bool = _f(False, "restart a file source when it ends")
    width: int = _f(1280, "capture width for cameras", 16, 8192)
    height: int = _f(720, "capture height for cameras", 16, 8192)
    fps: float = _f(30.0, "capture rate for cameras", 0.1, 240)
    record_mbps: float = _f(3.0, "picam: Mbit/s of the hardware H.264 encoder that makes clips ([record] clips)",
                            0.5, 25.0)
    record_uri: str = _f("", "rtsp:// cameras: a second stream whose packets are copied into clips, never decoded "
                             "(the camera's main stream, while uri is a small substream to detect on); "
                             "empty: uri's stream serves both")
    rtsp_transport: str = _f("tcp", "rtsp:// cameras: RTP over the RTSP connection (tcp) or over udp "
                                    "(loses packets on Wi-Fi)", choices=("tcp", "udp"))
    hwaccel: str = _f("off", "rtsp:// cameras: decode on the Pi's H.264 decoder (v4l2m2m, /dev/video10), "
                             "auto (v4l2m2m when there, else software), or off (software)",
                      choices=("off", "auto", "v4l2m2m"))


@dataclass
class ModelConfig:
    path: str = _f("ssd-mobilenet-v2-coco", "catalogue name or .tflite file")
    labels: str = _f("", "labels file; empty: the catalogue's, or one found next to the model")
    threads: int = _f(0, "interpreter threads; 0: all cores but one (left to capture and encoding)", 0, 64)
    family: str = _f("auto", "model family; auto: found from the output tensors",
                     choices=("auto", "ssd", "yolov5", "yolov8", "yolo-nms", "classifier"))
    input_range: list[float] = _f([], "real range that pixel values 0..255 map to (empty: the family's own, "
                                      "-1..1 for SSD and classifiers, 0..1 for YOLO)")
    resize: str = _f("auto", "fitting frames to the input: letterbox (keep aspect, pad), stretch; "
                             "auto: letterbox for YOLO, stretch otherwise", choices=("auto", "letterbox", "stretch"))
    delegate: str = _f("", "accelerator: empty (CPU), edgetpu (Coral), or the path of a TFLite external delegate library")
    delegate_options: list[str] = _f([], "options for the delegate as key=value strings (edgetpu: device=usb, device=pci:0)")
    models_dir: str = _f("", "':'-separated mirror directories searched before the cache")


@dataclass
class LabelFilterConfig:
    """[detect.labels.NAME]: what a detection of one label needs to count (events, counts, zones)."""

    min_score: float = _f(0.0, "minimum score for this label (0: detect.threshold)", 0.0, 1.0)
    min_area: float = _f(0.0, "smallest box, as a fraction of the frame", 0.0, 1.0)
    max_area: float = _f(1.0, "largest box, as a fraction of the frame", 0.0, 1.0)


@dataclass
class DetectConfig:
    threshold: float = _f(0.5, "minimum score", 0.0, 1.0)
    allow: list[str] = _f([], "labels to keep (empty: all)")
    deny: list[str] = _f([], "labels to drop")
    max_detections: int = _f(20, "most detections kept per frame", 1, 1000)
    top_k: int = _f(3, "classes shown for classification models", 1, 100)
    iou: float = _f(0.45, "overlap above which non-maximum suppression drops the weaker box of a class", 0.01, 1.0)
    labels: dict[str, LabelFilterConfig] = _f({}, "per-label filters for events, counts and zones: "
                                                  "[detect.labels.NAME] min_score, min_area, max_area")


@dataclass
class HttpConfig:
    enabled: bool = _f(True, "serve the viewer, stream and API")
    host: str = _f("127.0.0.1", "address to listen on (0.0.0.0: all interfaces)")
    port: int = _f(8080, "TCP port", 0, 65535)
    jpeg_quality: int = _f(80, "JPEG quality of the stream", 10, 100)
    max_viewers: int = _f(8, "concurrent stream viewers; more get 503", 1, 1000)
    client_timeout: float = _f(10.0, "seconds a client may stall (not sending its request, not reading) before it is dropped", 0.5, 600)
    token: str = _f("", "access token viewers must present (Authorization: Bearer, X-Edgedetect-Token or ?token=); "
                        "required when host is not loopback")
    allowed_hosts: list[str] = _f([], "host names (or addresses) besides localhost and loopback addresses that "
                                      "requests may name in their Host header when there is no token; "
                                      "others get 403 (DNS rebinding)")


@dataclass
class StatsConfig:
    interval: float = _f(10.0, "seconds between stats log lines", 0.5, 3600)
    window: int = _f(120, "samples kept for percentiles", 10, 100000)
    sysfs_root: str = _f("/sys", "root of sysfs (tests point it at a fake tree)")
    procfs_root: str = _f("/proc", "root of procfs, for CMA memory (tests point it at a fake tree)")


@dataclass
class PipelineConfig:
    stall_timeout: float = _f(10.0, "seconds without a processed frame before the pipeline counts as stalled", 1, 3600)
    max_inference_failures: int = _f(10, "inference failures in a row before the daemon exits", 1, 100000)


@dataclass
class MotionConfig:
    enabled: str = _f("auto", "skip inference on still scenes: auto (on for cameras), on, off",
                      choices=("auto", "on", "off"))
    threshold: float = _f(0.004, "fraction of thumbnail pixels that must change to count as motion", 0.0, 1.0)
    pixel_delta: int = _f(18, "grey-level change for a thumbnail pixel to count as changed", 1, 255)
    force_interval: float = _f(5.0, "seconds after which a frame is inferred even without motion", 0.1, 3600)
    thumb_width: int = _f(96, "width of the grey thumbnail that motion is measured on", 16, 640)


@dataclass
class DisplayConfig:
    mode: str = _f("none", "local monitor: none; kms (annotated frames straight to the screen, any source, "
                           "no desktop); drm (the Pi camera's preview with the boxes over it, no desktop); "
                           "qt (the same in a desktop window); auto (drm for picam, kms for other sources, "
                           "nothing without a connected monitor)", choices=("none", "auto", "kms", "drm", "qt"))
    camera: str = _f("", "with [cameras]: the one camera the monitor shows (empty: kms shows every camera "
                         "in a grid, drm the first)")
    device: str = _f("", "kms: /dev/dri/cardN (DRM/KMS through kms++) or a framebuffer such as /dev/fb0; "
                         "empty: DRM/KMS when kms++ (python3-kms++) is importable, else /dev/fb0")


@dataclass
class MqttConfig:
    enabled: bool = _f(False, "publish events, counts and stats to an MQTT broker")
    host: str = _f("localhost", "broker host")
    port: int = _f(1883, "broker port", 1, 65535)
    protocol: str = _f("3.1.1", "MQTT protocol version", choices=("3.1.1", "5"))
    username: str = _f("", "user name (empty: anonymous)")
    password: str = _f("", "password")
    tls: bool = _f(False, "connect with TLS")
    ca_file: str = _f("", "CA certificate for TLS (empty: system store)")
    prefix: str = _f("edgedetect", "topic prefix")
    device: str = _f("", "device name in topics and labels (empty: host name)")
    keepalive: int = _f(30, "keepalive seconds", 5, 3600)
    snapshot: bool = _f(True, "publish a JPEG snapshot of each event")
    discovery: bool = _f(True, "publish Home Assistant discovery config")
    discovery_prefix: str = _f("homeassistant", "Home Assistant discovery prefix")
    labels: list[str] = _f(["person"], "labels that make events (empty: all)")
    queue_limit: int = _f(200, "messages held while the broker is away; more are dropped and counted", 1, 100000)
    state_file: str = _f("/var/lib/edgedetect/switches.json", "where the per-camera switches set over MQTT "
                         "(detect, motion, snapshots, recordings) are kept over restarts; empty: not kept")


@dataclass
class TrackConfig:
    """[track]: how detections become objects, for MQTT and the event store alike."""

    min_hits: int = _f(3, "frames an object must be matched in before its event starts", 1, 1000)
    max_lost_s: float = _f(3.0, "seconds an object is kept unseen (occluded, or the scene still) before its "
                                "event ends", 0.0, 3600.0)
    iou: float = _f(0.2, "least overlap of a detection with an object's predicted box to continue it", 0.01, 1.0)
    high_score: float = _f(0.6, "detections scoring less only keep objects alive: they start none", 0.0, 1.0)
    low_score: float = _f(0.1, "detections from this score up to [detect] threshold are never shown or counted, "
                               "but keep a partly hidden object alive (1: not used)", 0.0, 1.0)


# [mqtt] keys that [track] replaced: read for one release, with a warning, into the [track] key
# named (None: no longer used).
MOVED_TO_TRACK = {"min_frames": "min_hits", "iou": "iou", "max_missing": None}


@dataclass
class RecordConfig:
    enabled: bool = _f(False, "keep events on disk (snapshots, clips, an index) and serve the /events page")
    dir: str = _f("/var/lib/edgedetect/events", "directory of the event store (a USB drive for heavy use)")
    labels: list[str] = _f(["person"], "labels that make events (empty: all)")
    clips: bool = _f(True, "keep a video clip of each event (needs PyAV: pip install av)")
    pre_s: float = _f(5.0, "seconds of video kept before an event starts", 0.0, 60.0)
    post_s: float = _f(5.0, "seconds of video kept after an event ends", 0.0, 300.0)
    max_clip_s: float = _f(300.0, "longest clip; an event that lasts longer keeps only its first seconds", 1.0, 86400.0)
    max_width: int = _f(640, "clips encoded here (cameras that give no H.264 of their own) are scaled down to at "
                             "most this width, aspect kept (0: as captured); a camera's own packets are copied as they are",
                        0, 8192)
    max_mb: float = _f(1000.0, "most megabytes the store keeps; the oldest events are deleted first", 1.0, 1e7)
    max_days: float = _f(14.0, "days an event is kept (0: no age limit)", 0.0, 36500.0)
    min_free_mb: float = _f(300.0, "free megabytes below which recording pauses (and resumes by itself)", 0.0, 1e7)


@dataclass
class ZoneConfig:
    """[[zones]]: a named area; an object is in it when the bottom centre of its box is."""

    name: str = _f("", "zone name (letters, digits, _ and -)")
    polygon: list[list[float]] = _f([], "corners as [x, y] pairs, fractions of the frame (0..1), at least 3")
    labels: list[str] = _f([], "labels the zone counts (empty: all)")
    min_score: float = _f(0.0, "minimum score in this zone", 0.0, 1.0)
    min_area: float = _f(0.0, "smallest box in this zone, as a fraction of the frame", 0.0, 1.0)
    max_area: float = _f(1.0, "largest box in this zone, as a fraction of the frame", 0.0, 1.0)


@dataclass
class MaskConfig:
    """[[masks]]: an area where detections are ignored (tested at the bottom centre of the box)."""

    polygon: list[list[float]] = _f([], "corners as [x, y] pairs, fractions of the frame (0..1), at least 3")
    labels: list[str] = _f([], "labels the mask hides (empty: all)")


@dataclass
class CameraConfig:
    """[cameras.NAME]: one of several cameras that share the detector. Source options left out
    take [source]'s; `motion`, `detect` and `record` hold only the keys the camera overrides."""

    uri: str = _f("", "as [source] uri: picam | camera index or /dev/videoN | rtsp:// or http:// URL | file path")
    enabled: bool = _f(True, "run this camera")
    fps: float = _f(0.0, "the most inferences a second this camera gets (0: as many as the detector gives it)",
                    0.0, 240)
    pace: bool | None = _f(None, "as [source] pace (unset: [source]'s)")
    loop: bool | None = _f(None, "as [source] loop (unset: [source]'s)")
    width: int | None = _f(None, "as [source] width (unset: [source]'s)", 16, 8192)
    height: int | None = _f(None, "as [source] height (unset: [source]'s)", 16, 8192)
    capture_fps: float | None = _f(None, "as [source] fps: the capture rate for cameras (unset: [source]'s)", 0.1, 240)
    record_uri: str = _f("", "as [source] record_uri: this camera's stream copied into clips (empty: uri's)")
    rtsp_transport: str | None = _f(None, "as [source] rtsp_transport (unset: [source]'s)", choices=("tcp", "udp"))
    hwaccel: str | None = _f(None, "as [source] hwaccel (unset: [source]'s)", choices=("off", "auto", "v4l2m2m"))
    motion: dict[str, Any] = _f({}, "[cameras.NAME.motion]: keys of [motion] this camera sets its own way")
    detect: dict[str, Any] = _f({}, "[cameras.NAME.detect]: keys of [detect] this camera sets its own way")
    record: dict[str, Any] = _f({}, "[cameras.NAME.record]: " + ", ".join(sorted(
        ("enabled", "labels", "clips", "pre_s", "post_s", "max_clip_s"))) + " for this camera")
    zones: list[ZoneConfig] = _f([], "[[cameras.NAME.zones]]: this camera's zones")
    masks: list[MaskConfig] = _f([], "[[cameras.NAME.masks]]: this camera's masks")


CAMERA_OVERRIDES = {"motion": None, "detect": None, "record": ("enabled", "labels", "clips", "pre_s", "post_s",
                                                             "max_clip_s")}
MAX_CAMERAS = 16
ONE_CAMERA = "camera"  # the name of the camera that [source] or --source describes


@dataclass
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    zones: list[ZoneConfig] = field(default_factory=list)
    masks: list[MaskConfig] = field(default_factory=list)
    cameras: dict[str, CameraConfig] = field(default_factory=dict)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is types.UnionType:
        return _type_name(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is list:
        inner = typing.get_args(tp)[0]
        if typing.get_origin(inner) is list:
            return "a list of [x, y] pairs" if typing.get_args(inner)[0] is float else "a list of lists"
        if dataclasses.is_dataclass(inner):
            return "an array of tables"
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(inner, "values")
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is types.UnionType:  # `int | None`: a value of the type (None is only the default)
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return _table(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        inner = typing.get_args(tp)[1]
        return {str(k): _coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        inner = typing.get_args(tp)[0]
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is float:
        # nan passes every comparison of a range check and inf has no sensible meaning in any
        # key: both are refused here, where every number of the file and the command line passes.
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return value


def _check_range(value: Any, meta: dict, where: str) -> None:
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{where}: expected a value from {lo:g} to {hi:g}, got {value!r}")


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    near = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}; expected one of: {', '.join(known)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _table(cls: Any, body: dict[str, Any], where: str) -> Any:
    """A nested table (an item of [[zones]], a [detect.labels.NAME]) checked against its
    dataclass like a section: unknown keys, types and ranges."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for key, value in body.items():
        if key not in fields:
            raise _unknown(key, list(fields), where)
        v = _coerce(value, hints[key], f"{where}.{key}")
        _check_range(v, fields[key].metadata, f"{where}.{key}")
        if isinstance(v, list):
            for item in v:
                _check_range(item, fields[key].metadata, f"{where}.{key}")
        values[key] = v
    return cls(**values)


def _camera(name: str, body: Any, where: str) -> CameraConfig:
    """One [cameras.NAME] table: its own keys like any table, its overrides checked against the
    sections they override."""
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a table ([cameras.{name}]), got {body!r}")
    own = {k: v for k, v in body.items() if k not in CAMERA_OVERRIDES}
    cam = _table(CameraConfig, own, where)
    hints = _hints(Config)
    for section, allowed in CAMERA_OVERRIDES.items():
        if section not in body:
            continue
        table = body[section]
        if not isinstance(table, dict):
            raise ConfigError(f"{where}.{section}: expected a table, got {table!r}")
        cls = hints[section]
        fields = {f.name: f for f in dataclasses.fields(cls) if allowed is None or f.name in allowed}
        values = {}
        for key, value in table.items():
            if key not in fields:
                raise _unknown(key, list(fields), f"{where}.{section}")
            v = _coerce(value, _hints(cls)[key], f"{where}.{section}.{key}")
            for item in v if isinstance(v, list) else [v]:
                _check_range(item, fields[key].metadata, f"{where}.{section}.{key}")
            values[key] = v
        setattr(cam, section, values)
    return cam


def camera_configs(cfg: Config) -> list[tuple[str, Config]]:
    """Each enabled camera with the config it runs on: [source] and the sections with its own
    keys put in. Without [cameras], the one camera that [source] describes."""
    if not cfg.cameras:
        return [(ONE_CAMERA, cfg)]
    out = []
    for name, cam in cfg.cameras.items():
        if not cam.enabled:
            continue
        src = dataclasses.replace(cfg.source, uri=cam.uri, record_uri=cam.record_uri, **{
            key: value for key, value in (("pace", cam.pace), ("loop", cam.loop), ("width", cam.width),
                                          ("height", cam.height), ("fps", cam.capture_fps),
                                          ("rtsp_transport", cam.rtsp_transport), ("hwaccel", cam.hwaccel))
            if value is not None})
        out.append((name, dataclasses.replace(
            cfg, source=src, motion=dataclasses.replace(cfg.motion, **cam.motion),
            detect=dataclasses.replace(cfg.detect, **cam.detect), record=dataclasses.replace(cfg.record, **cam.record),
            zones=list(cam.zones), masks=list(cam.masks))))
    return out


SECRET_KEYS = frozenset({"http.token", "mqtt.password"})  # never shown in an error line


def set_value(cfg: Config, dotted: str, value: Any, origin: str = "command line") -> None:
    """Set `section.key` on cfg after validating it like a TOML value."""
    section, _, key = dotted.partition(".")
    sections = [f.name for f in dataclasses.fields(Config)]
    if section not in sections:
        raise _unknown(section, sections, origin)
    sub = getattr(cfg, section)
    if not dataclasses.is_dataclass(sub):
        raise ConfigError(f"{origin}: {section}: expected an array of tables ([[{section}]]), got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(sub)}
    if key not in fields:
        raise _unknown(key, list(fields), f"{origin}: [{section}]")
    where = f"{origin}: {section}.{key}"
    tp = _hints(type(sub))[key]
    if dotted in SECRET_KEYS and not isinstance(value, str):  # an error line must not show a secret
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} (value not shown)")
    v = _coerce(value, tp, where)
    _check_range(v, fields[key].metadata, where)
    if isinstance(v, list):
        for item in v:
            _check_range(item, fields[key].metadata, where)
    setattr(sub, key, v)


def _validate_areas(cfg: Config, origin: str) -> None:
    """Zones, masks and label filters: one line naming the zone (or mask, or label)."""
    # Counted before any polygon is looked at: the checks of each polygon cost more than linearly.
    for section, items, most in (("zones", cfg.zones, MAX_ZONES), ("masks", cfg.masks, MAX_MASKS)):
        if len(items) > most:
            raise ConfigError(f"{origin}: {section}: {len(items)} [[{section}]] tables; expected at most {most}")
    names: dict[str, str] = {}  # lower case -> the name as written
    for i, z in enumerate(cfg.zones):
        if not NAME_RE.fullmatch(z.name):
            raise ConfigError(f"{origin}: zones[{i}].name: expected a name of letters, digits, _ and -, "
                              f"got {z.name!r}")
        seen = names.get(z.name.lower())
        if seen == z.name:
            raise ConfigError(f"{origin}: zone {z.name!r}: the name is used twice; expected unique zone names")
        if seen is not None:  # people, and Home Assistant's entity ids, read them as one name
            raise ConfigError(f"{origin}: zone {z.name!r}: differs from zone {seen!r} only in case; "
                              f"expected zone names that differ in more than case")
        names[z.name.lower()] = z.name
        why = polygon_problem(z.polygon)
        if why:
            raise ConfigError(f"{origin}: zone {z.name!r}: polygon {why}")
        if z.min_area > z.max_area:
            raise ConfigError(f"{origin}: zone {z.name!r}: min_area {z.min_area:g} is above max_area {z.max_area:g}")
    for i, m in enumerate(cfg.masks):
        why = polygon_problem(m.polygon)
        if why:
            raise ConfigError(f"{origin}: masks[{i}]: polygon {why}")
    for label, lf in cfg.detect.labels.items():
        if lf.min_area > lf.max_area:
            raise ConfigError(f"{origin}: detect.labels.{label}: min_area {lf.min_area:g} is above "
                              f"max_area {lf.max_area:g}")


def _validate_http(cfg: Config, origin: str) -> None:
    from edgedetect.hosts import allowed_host_problem

    for i, entry in enumerate(cfg.http.allowed_hosts):
        why = allowed_host_problem(entry)
        if why:
            raise ConfigError(f"{origin}: http.allowed_hosts[{i}]: {shorten(repr(entry))} {why}")


def _validate_cameras(cfg: Config, origin: str) -> None:
    from edgedetect.geometry import NAME_RE

    if len(cfg.cameras) > MAX_CAMERAS:
        raise ConfigError(f"{origin}: cameras: {len(cfg.cameras)} [cameras.NAME] tables; expected at most {MAX_CAMERAS}")
    if cfg.cameras and (cfg.zones or cfg.masks):
        raise ConfigError(f"{origin}: zones: with [cameras], zones and masks belong to a camera; expected "
                          "[[cameras.NAME.zones]] and [[cameras.NAME.masks]]")
    seen: dict[str, str] = {}
    for name, cam in cfg.cameras.items():
        if not NAME_RE.fullmatch(name):
            raise ConfigError(f"{origin}: camera {name!r}: expected a name of letters, digits, _ and -")
        if name.lower() in seen:
            raise ConfigError(f"{origin}: camera {name!r}: differs from camera {seen[name.lower()]!r} only in case; "
                              "expected camera names that differ in more than case")
        seen[name.lower()] = name
        if not cam.uri:
            raise ConfigError(f"{origin}: camera {name!r}: uri: expected the camera's source (as [source] uri)")
    if cfg.cameras and not any(c.enabled for c in cfg.cameras.values()):
        raise ConfigError(f"{origin}: cameras: every camera has enabled = false; expected at least one to run")
    for name, cam_cfg in camera_configs(cfg):
        if name == ONE_CAMERA and not cfg.cameras:
            continue
        try:
            _validate_areas(cam_cfg, origin)
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"{origin}: ", f"{origin}: camera {name!r}: ", 1)) from None


RTSP_SCHEMES = ("rtsp://", "rtsps://")


def _validate_record_uri(cfg: Config, origin: str) -> None:
    for name, c in camera_configs(cfg):
        src = c.source
        if src.record_uri and not (src.record_uri.startswith(RTSP_SCHEMES) and src.uri.startswith(RTSP_SCHEMES)):
            where = "source" if name == ONE_CAMERA and not cfg.cameras else f"cameras.{name}"
            kinds = [u.split("://")[0] + "://" if "://" in u else "a path" for u in (src.record_uri, src.uri)]
            raise ConfigError(f"{origin}: {where}.record_uri: expected an rtsp:// URL beside an rtsp:// uri, got "
                              f"{kinds[0]} with uri {shorten(kinds[1])}")


def _validate_whole(cfg: Config, origin: str) -> None:
    _validate_cameras(cfg, origin)
    _validate_record_uri(cfg, origin)
    _validate_areas(cfg, origin)
    _validate_http(cfg, origin)
    rng = cfg.model.input_range
    if rng and (len(rng) != 2 or rng[0] >= rng[1]):
        raise ConfigError(f"{origin}: model.input_range: expected [low, high] with low < high, or [], "
                          f"got {cfg.model.input_range!r}")
    overlap = set(cfg.detect.allow) & set(cfg.detect.deny)
    if overlap:
        raise ConfigError(f"{origin}: detect.allow and detect.deny both name {sorted(overlap)!r}")


def _moved_to_track(cfg: Config, mqtt: dict[str, Any], track: Any, origin: str) -> dict[str, Any]:
    """[mqtt] without the keys [track] replaced; those given are checked as the [track] keys they
    became and applied unless [track] sets them too, with one warning naming the new keys."""
    moved = [key for key in mqtt if key in MOVED_TO_TRACK]
    if not moved:
        return mqtt
    own = track if isinstance(track, dict) else {}
    read, unused = [], []
    for key in moved:
        new = MOVED_TO_TRACK[key]
        if new is None:
            unused.append(f"{key} (frames) is not used: set track.max_lost_s (seconds)")
        elif new in own:
            unused.append(f"{key} is not used: [track] sets {new}")
        else:
            read.append(f"{key} as track.{new}")
            try:
                set_value(cfg, f"track.{new}", mqtt[key], origin)
            except ConfigError as e:
                raise ConfigError(str(e).replace(f"track.{new}:", f"mqtt.{key} (read as track.{new}):", 1)) from None
    log.warning("%s: [mqtt] %s: these keys moved to [track] (min_hits, max_lost_s, iou, high_score); %s", origin,
                ", ".join(moved), "; ".join(([f"read {', '.join(read)}"] if read else []) + unused))
    return {k: v for k, v in mqtt.items() if k not in MOVED_TO_TRACK}


def load(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (None: the default path if it exists, else built-in defaults), then apply
    `overrides` ({"section.key": value}, from the command line)."""
    cfg = Config()
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        try:
            # utf-8-sig: a byte-order mark (Windows editors write one) is read past, not a TOML error
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except PermissionError:
            raise ConfigError(f"{path}: config file not readable (permission denied)") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
        except OSError as e:  # a name over 255 bytes, a loop of links, a component that is a file ...
            raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text, expected a TOML file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML ({e})") from None
        sections = [f.name for f in dataclasses.fields(Config)]
        hints = _hints(Config)
        for section, body in data.items():
            if section not in sections:
                raise _unknown(section, sections, str(path))
            if section == "cameras":
                if not isinstance(body, dict):
                    raise ConfigError(f"{path}: cameras: expected tables [cameras.NAME], got {body!r}")
                cfg.cameras = {str(name): _camera(str(name), cam, f"{path}: cameras.{name}")
                               for name, cam in body.items()}
                if "uri" in data.get("source", {}) and cfg.cameras:
                    raise ConfigError(f"{path}: source.uri: set together with [cameras]; expected each camera's uri "
                                      "in its [cameras.NAME] table ([source] then holds what they share)")
                continue
            if typing.get_origin(hints[section]) is list:  # [[zones]], [[masks]]: arrays of tables
                if not isinstance(body, list):
                    raise ConfigError(f"{path}: {section}: expected an array of tables ([[{section}]]), got {body!r}")
                setattr(cfg, section, [_coerce(item, typing.get_args(hints[section])[0], f"{path}: {section}[{i}]")
                                       for i, item in enumerate(body)])
                continue
            if not isinstance(body, dict):
                raise ConfigError(f"{path}: [{section}] must be a table, got {body!r}")
            if section == "mqtt":
                body = _moved_to_track(cfg, body, data.get("track"), str(path))
            for key, value in body.items():
                set_value(cfg, f"{section}.{key}", value, str(path))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_value(cfg, dotted, value)
    if (overrides or {}).get("source.uri") is not None:
        cfg.cameras = {}  # --source on the command line: one camera, whatever the file says
    _validate_whole(cfg, origin)
    return cfg


def to_toml(cfg: Config) -> str:
    """The effective config as TOML that `load` reads back unchanged."""
    out: list[str] = []
    for sf in dataclasses.fields(cfg):
        sub = getattr(cfg, sf.name)
        if sf.name == "cameras":
            out += _toml_cameras(sub)
            continue
        if isinstance(sub, list):  # arrays of tables
            out.append(f"# [[{sf.name}]]: {len(sub)}")
            for item in sub:
                out.append(f"[[{sf.name}]]")
                out += _toml_fields(item)
            out.append("")
            continue
        out.append(f"[{sf.name}]")
        fields = _toml_fields(sub)
        if sf.name == "source" and cfg.cameras:  # each camera has its own uri
            fields = [line for line in fields if not line.startswith("uri =")]
        out += fields
        for f in dataclasses.fields(sub):
            v = getattr(sub, f.name)
            if isinstance(v, dict):
                for k, item in v.items():
                    out.append(f"[{sf.name}.{f.name}.{json.dumps(k)}]")
                    out += _toml_fields(item)
        out.append("")
    return "\n".join(out)


def _toml_cameras(cameras: dict[str, CameraConfig]) -> list[str]:
    out = []
    for name, cam in cameras.items():
        out.append(f"[cameras.{json.dumps(name)}]")
        out += [f"{f.name} = {_toml_value(getattr(cam, f.name))}" for f in dataclasses.fields(cam)
                if f.name not in ("zones", "masks", *CAMERA_OVERRIDES) and getattr(cam, f.name) is not None]
        for section in CAMERA_OVERRIDES:
            values = getattr(cam, section)
            if values:
                out.append(f"[cameras.{json.dumps(name)}.{section}]")
                out += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        for section in ("zones", "masks"):
            for item in getattr(cam, section):
                out.append(f"[[cameras.{json.dumps(name)}.{section}]]")
                out += _toml_fields(item)
        out.append("")
    return out


def _toml_fields(obj: Any) -> list[str]:
    return [f"{f.name} = {_toml_value(getattr(obj, f.name))}  # {f.metadata.get('help', '')}"
            for f in dataclasses.fields(obj)
            if not isinstance(getattr(obj, f.name), dict) and getattr(obj, f.name) is not None]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))
