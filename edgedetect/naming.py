"""The name this daemon goes by where others tell devices apart: MQTT topics, Home Assistant and
the metrics' device label."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgedetect.config import Config


def device_name(cfg: "Config") -> str:
    """mqtt.device, or else the host name."""
    return cfg.mqtt.device or socket.gethostname().split(".")[0] or "edgedetect"
