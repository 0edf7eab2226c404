"""MQTT topic names under {prefix}/{device} (and {prefix}/{device}/{camera} with [cameras]), and
the checks on them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from edgedetect.config import MqttConfig
from edgedetect.errors import UserError

QOS_STATE = 1  # events, counts, availability, discovery
QOS_BULK = 0  # stats and snapshots: only the newest matters
ONLINE, OFFLINE = "online", "offline"
_TOPIC_BAD = re.compile(r"[+#\x00]")
_SLUG_OTHER = re.compile(r"[^a-zA-Z0-9_-]+")


def slug(text: str) -> str:
    """A name (label, zone, device) as a topic level and Home Assistant object id: lower-case
    ASCII letters, digits, _ and -, with spaces as _ ('traffic light' -> 'traffic_light', 'Driveway'
    -> 'driveway'). Where that rendering loses more than case (other characters, non-ASCII), six
    hex digits of the name's SHA-1 follow, so that 'a+b' and 'a#b', '人' and '车' stay apart.
    Case alone keeps the topics people already use: zone names that differ only in case are
    refused in the config, and labels that still meet turn MQTT off with one line."""
    plain = _SLUG_OTHER.sub("_", text).strip("_").lower() or "unknown"
    if plain == text.replace(" ", "_").lower():
        return plain
    return f"{plain}_{hashlib.sha1(text.encode()).hexdigest()[:6]}"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of the one camera under {prefix}/{device}, or, with `camera` set ([cameras]),
    those of that camera under {prefix}/{device}/{camera}; availability and stats are the
    daemon's, under {prefix}/{device}, either way."""

    prefix: str
    device: str
    discovery_prefix: str
    camera: str = ""
    base: str = field(init=False)  # where events, counts, zone counts and snapshots go
    availability: str = field(init=False)
    events: str = field(init=False)
    stats: str = field(init=False)
    node: str = field(init=False)  # the Home Assistant device id (the camera's, with `camera`)
    host_node: str = field(init=False)  # the Home Assistant device id of the daemon

    def __post_init__(self) -> None:
        daemon = f"{self.prefix}/{self.device}"
        host_node = f"edgedetect_{slug(self.device)}"
        base = f"{daemon}/{slug(self.camera)}" if self.camera else daemon
        node = f"{host_node}_{slug(self.camera)}" if self.camera else host_node
        for name, value in (("base", base), ("availability", f"{daemon}/availability"), ("events", f"{base}/events"),
                            ("stats", f"{daemon}/stats"), ("node", node), ("host_node", host_node)):
            object.__setattr__(self, name, value)

    def for_camera(self, camera: str) -> "Topics":
        """The topics of one of several cameras ([cameras.NAME])."""
        return Topics(self.prefix, self.device, self.discovery_prefix, camera)

    def count(self, label: str) -> str:
        return f"{self.base}/count/{slug(label)}"

    def snapshot(self, label: str) -> str:
        return f"{self.base}/snapshot/{slug(label)}"

    def zone_count(self, zone: str, label: str) -> str:
        return f"{self.base}/zone/{slug(zone)}/{slug(label)}"

    def switch_command(self, switch: str) -> str:
        """Where ON/OFF for one of the camera's switches (edgedetect/switches.py) is taken."""
        return f"{self.base}/{switch}/set"

    def switch_state(self, switch: str) -> str:
        return f"{self.base}/{switch}/state"

    def switch_filters(self, several: bool, switches: Iterable[str]) -> list[str]:
        """What to subscribe to for every camera's switches (on the daemon's topics): the camera
        level a wildcard with [cameras], so that a command for a camera that does not exist is
        heard and answered with a log line."""
        return [f"{self.base}/+/{s}/set" if several else self.switch_command(s) for s in switches]

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"


def check_config(mc: MqttConfig, device: str) -> None:
    """One-line errors for settings that cannot work, before any thread starts."""
    for key, value in (("mqtt.prefix", mc.prefix), ("mqtt.discovery_prefix", mc.discovery_prefix)):
        if not value or _TOPIC_BAD.search(value) or value.startswith("/") or value.endswith("/"):
            raise UserError(f"{key}: expected a topic prefix without '+', '#' or a leading or trailing '/', "
                            f"got {value!r}")
    if not device or _TOPIC_BAD.search(device) or "/" in device:
        raise UserError(f"mqtt.device: expected a name without '/', '+' or '#', got {device!r}")
    if mc.password and not mc.username:
        raise UserError("mqtt.password: set without mqtt.username; expected both or neither")
    if mc.ca_file:
        if not mc.tls:
            raise UserError("mqtt.ca_file: set but mqtt.tls is false; expected tls = true with a CA file")
        if not Path(mc.ca_file).expanduser().is_file():
            raise UserError(f"mqtt.ca_file: {mc.ca_file} does not exist; expected a CA certificate (PEM)")
