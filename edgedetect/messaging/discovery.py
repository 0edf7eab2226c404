"""Home Assistant MQTT discovery: the daemon's device with its figures, and a sensor per label
and per zone and label and a switch per camera switch on the camera's device (the daemon's own
with one camera; with [cameras], one device per camera, connected through the daemon's)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from edgedetect import __version__
from edgedetect.config import Config, camera_configs
from edgedetect.messaging.topics import OFFLINE, ONLINE, Topics, slug


def _device_block(topics: Topics, device: str, model: str) -> dict[str, Any]:
    block = {"identifiers": [topics.node], "name": f"{device} {topics.camera}" if topics.camera else device,
             "manufacturer": "edgedetect", "model": model or "edgedetect", "sw_version": __version__}
    if topics.camera:
        block["via_device"] = topics.host_node
    return block


def unique_id(topics: Topics, object_id: str) -> str:
    return f"{topics.node}_{object_id}"


def label_object_ids(label: str) -> tuple[str, str]:
    """The object ids of a label's count sensor and occupancy binary sensor."""
    s = slug(label)
    return f"{s}_count", f"{s}_occupancy"


def zone_object_id(zone: str, label: str) -> str:
    return f"zone_{slug(zone)}_{slug(label)}_count"


def _entity(topics: Topics, device: str, model: str, object_id: str, name: str, state_topic: str,
            **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "unique_id": unique_id(topics, object_id),
        "object_id": unique_id(topics, object_id),
        "state_topic": state_topic,
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": _device_block(topics, device, model),
        **extra,
    }


def discovery_configs(topics: Topics, device: str, model: str,
                      snap: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant MQTT discovery for the figures in the stats topic. Temperature and
    throttling only where the hardware reports them."""
    diag = {"entity_category": "diagnostic"}
    out = [
        (topics.discovery("sensor", "inference_fps"), _entity(
            topics, device, model, "inference_fps", "Inference FPS", topics.stats,
            value_template="{{ value_json.inference_fps }}", unit_of_measurement="fps",
            state_class="measurement", icon="mdi:speedometer", **diag)),
        (topics.discovery("sensor", "camera_fps"), _entity(
            topics, device, model, "camera_fps", "Camera FPS", topics.stats,
            value_template="{{ value_json.camera_fps }}", unit_of_measurement="fps",
            state_class="measurement", icon="mdi:camera", **diag)),
        (topics.discovery("sensor", "inference_ms"), _entity(
            topics, device, model, "inference_ms", "Inference time", topics.stats,
            value_template="{{ value_json.inference_ms.p50 | default(0) }}", unit_of_measurement="ms",
            device_class="duration", state_class="measurement", **diag)),
    ]
    if "temperature_c" in snap:
        out.append((topics.discovery("sensor", "cpu_temperature"), _entity(
            topics, device, model, "cpu_temperature", "CPU temperature", topics.stats,
            value_template="{{ value_json.temperature_c }}", unit_of_measurement="°C",
            device_class="temperature", state_class="measurement", **diag)))
    if "throttled" in snap:
        out.append((topics.discovery("binary_sensor", "throttled"), _entity(
            topics, device, model, "throttled", "Throttled", topics.stats,
            # Bits 0-3 of the firmware word: under-voltage, capped, throttled, soft limit now.
            value_template="{{ 'ON' if (value_json.throttled | int(0, 16)) % 16 else 'OFF' }}",
            payload_on="ON", payload_off="OFF", device_class="problem",
            json_attributes_topic=topics.stats,
            json_attributes_template="{{ {'flags': value_json.throttled_flags, "
                                     "'word': value_json.throttled} | tojson }}", **diag)))
    return out


def label_discovery(topics: Topics, device: str, model: str, label: str) -> list[tuple[str, dict[str, Any]]]:
    """A count sensor and an occupancy binary sensor for one label."""
    count, occupancy = label_object_ids(label)
    return [
        (topics.discovery("sensor", count), _entity(
            topics, device, model, count, f"{label} count", topics.count(label),
            unit_of_measurement=label, state_class="measurement")),
        (topics.discovery("binary_sensor", occupancy), _entity(
            topics, device, model, occupancy, f"{label} detected", topics.count(label),
            value_template="{{ 'ON' if value | int(0) > 0 else 'OFF' }}", payload_on="ON", payload_off="OFF",
            device_class="occupancy")),
    ]


def zone_discovery(topics: Topics, device: str, model: str, zone: str, label: str) -> list[tuple[str, dict[str, Any]]]:
    """A count sensor for one label in one zone."""
    object_id = zone_object_id(zone, label)
    return [(topics.discovery("sensor", object_id), _entity(
        topics, device, model, object_id, f"{zone} {label} count", topics.zone_count(zone, label),
        unit_of_measurement=label, state_class="measurement", icon="mdi:vector-polygon"))]


SWITCH_LOOKS = {  # switch -> (name in Home Assistant, icon)
    "detect": ("Detect", "mdi:motion-sensor"),
    "motion": ("Motion", "mdi:run-fast"),
    "snapshots": ("Snapshots", "mdi:image-multiple"),
    "recordings": ("Recordings", "mdi:filmstrip-box-multiple"),
}


def switch_discovery(topics: Topics, device: str, model: str, switch: str) -> list[tuple[str, dict[str, Any]]]:
    """A switch for one of the camera's switches: commands ON/OFF, the state as echoed."""
    name, icon = SWITCH_LOOKS[switch]
    return [(topics.discovery("switch", switch), _entity(
        topics, device, model, switch, name, topics.switch_state(switch),
        command_topic=topics.switch_command(switch), payload_on="ON", payload_off="OFF",
        icon=icon, entity_category="config"))]


def name_clash(cfg: Config, topics: Topics, model_labels: Iterable[str]) -> str | None:
    """Two names that would be published under one topic or one Home Assistant id, as one
    line naming both; None when each has its own. The labels are [mqtt] labels, or all of the
    model's; each zone counts its own labels, or those. With [cameras], every camera's topics
    and ids (under its own name) are checked together."""
    labels = list(dict.fromkeys(cfg.mqtt.labels or model_labels))
    owner: dict[str, str] = {}
    for name, cam_cfg in camera_configs(cfg):
        cam_topics, whose = (topics.for_camera(name), f"camera {name!r} ") if cfg.cameras else (topics, "")
        zones = [(z.name, z.labels or labels) for z in cam_cfg.zones]
        for who, what, key in _claims(cam_topics, labels, zones):
            first = owner.setdefault(key, whose + who)
            if first != whose + who:
                return f"{first} and {whose + who} would both be {what} {key}"
    return None


def _claims(topics: Topics, labels: list[str],
            zones: list[tuple[str, list[str]]]) -> Iterator[tuple[str, str, str]]:
    """(whose, what, name) for every topic and Home Assistant id a label or zone count takes."""
    for label in labels:
        who = f"label {label!r}"
        yield who, "topic", topics.count(label)
        yield who, "topic", topics.snapshot(label)
        for object_id in label_object_ids(label):
            yield who, "Home Assistant id", unique_id(topics, object_id)
    for zone, zone_labels in zones:
        for label in zone_labels:
            who = f"zone {zone!r} label {label!r}"
            yield who, "topic", topics.zone_count(zone, label)
            yield who, "Home Assistant id", unique_id(topics, zone_object_id(zone, label))
