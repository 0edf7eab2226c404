"""SIGHUP (`systemctl reload edgedetect`): read the config again, apply what can change while
running, and say in one line which changed keys need a restart instead.

Live keys are those that only change a value the running stages read afresh: the detection
filters, [detect] and each camera's [cameras.NAME.detect] (handed to the inference thread whole,
as immutable objects), the stats interval and the viewer token, viewer limit and allowed hosts
(read by each new request). Everything else (source, model,
port, threads ...) would mean rebuilding part of the pipeline and is refused.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from edgedetect.config import Config, camera_configs
from edgedetect.detect.resolve import detect_filter

log = logging.getLogger("edgedetect")

LIVE = frozenset({
    "detect.threshold", "detect.allow", "detect.deny", "detect.max_detections", "detect.top_k", "detect.iou",
    "stats.interval",
    "http.token", "http.max_viewers", "http.allowed_hosts",
})
SECRET = frozenset({"http.token", "mqtt.password"})


def is_live(key: str) -> bool:
    return key in LIVE or (key.startswith("cameras.") and key.endswith(".detect"))


def changed_keys(old: Config, new: Config) -> list[str]:
    """`section.key` of every value that differs; a whole array of tables ([[zones]]) by its name;
    `cameras.NAME.key` when the same cameras are named, else `cameras`."""
    out = []
    for sf in dataclasses.fields(old):
        a, b = getattr(old, sf.name), getattr(new, sf.name)
        if a == b:
            continue
        if sf.name == "cameras" and a.keys() == b.keys():
            out += [f"cameras.{name}.{f.name}" for name in a for f in dataclasses.fields(a[name])
                    if getattr(a[name], f.name) != getattr(b[name], f.name)]
            continue
        if not dataclasses.is_dataclass(a):
            out.append(sf.name)
            continue
        out += [f"{sf.name}.{f.name}" for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    return out


def _value(cfg: Config, key: str) -> Any:
    if key.startswith("cameras."):
        _, name, field = key.split(".")
        return getattr(cfg.cameras[name], field)
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _shown(key: str, value: Any) -> str:
    return f"{key} (changed)" if key in SECRET else f"{key} = {value!r}"


def plan(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """(keys to apply now, keys refused) for a reload from `old` to `new`."""
    from edgedetect.hosts import is_loopback

    keys = changed_keys(old, new)
    live = [k for k in keys if is_live(k)]
    refused = [k for k in keys if not is_live(k)]
    if "http.token" in live and not new.http.token and old.http.enabled and not is_loopback(old.http.host):
        live.remove("http.token")  # the network would see the viewer without one
        refused.append("http.token")
    return live, refused


def apply(daemon: Any, new: Config) -> tuple[list[str], list[str]]:
    """Put the live changes of `new` into the running daemon; returns (applied, refused) and logs
    one line for each list that is not empty."""
    cfg: Config = daemon.cfg
    live, refused = plan(cfg, new)
    for key in live:
        if key.startswith("cameras."):
            _, name, field = key.split(".")
            setattr(cfg.cameras[name], field, getattr(new.cameras[name], field))
        else:
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, getattr(getattr(new, section), name))
    p = daemon.pipeline
    if p is not None:
        if any(k.startswith("detect.") or k.startswith("cameras.") for k in live):
            p.worker.set_filter(detect_filter(cfg), cfg.detect.top_k)
            # A camera's own filter holds [detect]'s keys it does not set, so it is made again too.
            own = {name: detect_filter(cam_cfg) for name, cam_cfg in camera_configs(cfg)
                   if name in cfg.cameras and cfg.cameras[name].detect}
            for camera in p.cameras:
                camera.flt = own.get(camera.name)
        if "stats.interval" in live:
            p.reporter.interval = cfg.stats.interval  # from the next line on
    # http.*: the server holds cfg.http itself and reads the token, limit and hosts per request.
    if live:
        log.info("reload: applied %s", ", ".join(_shown(k, _value(cfg, k)) for k in live))
    if refused:
        log.warning("reload: kept the running value of %s (changing %s needs a restart: systemctl restart "
                    "edgedetect)", ", ".join(refused), "it" if len(refused) == 1 else "them")
    if not live and not refused:
        log.info("reload: the config is unchanged")
    return live, refused
