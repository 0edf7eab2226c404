"""Messaging: tracked events, per-label counts, stats and Home Assistant discovery over MQTT.

The events thread hands each track event here after the store has kept it; paho's own thread
does the network and reconnects with backoff. Messages the broker cannot take now are held up to
`queue_limit` (QoS 1) and dropped and counted beyond that; counts and stats are never queued
while the broker is away: they are re-sent, current, when it comes back.

Topics, under BASE = `{prefix}/{device}`:

    BASE/availability       online | offline (retained; offline is also the last will)
    BASE/events             JSON start/update/end of one tracked object (QoS 1)
    BASE/count/LABEL        live objects of LABEL, e.g. 2 (retained)
    BASE/zone/ZONE/LABEL    live objects of LABEL standing in ZONE (retained; with [[zones]])
    BASE/snapshot/LABEL     JPEG of the latest started/updated object, cropped around it with its
                            box drawn (retained)
    BASE/stats              the /api/stats figures as JSON, every stats interval (retained)
    BASE/SWITCH/set         ON | OFF for the camera's switch detect, motion, snapshots or
                            recordings (control.py; subscribed)
    BASE/SWITCH/state       ON | OFF, the switch's state (retained)
    DISCOVERY/sensor|binary_sensor|switch/edgedetect_DEVICE/*/config   Home Assistant discovery

With [cameras] there is still one connection, availability and stats topic; each camera's
events, counts, zone counts, snapshots and switches go under BASE/CAMERA instead of BASE, and
its entities belong to a Home Assistant device of its own, edgedetect_DEVICE_CAMERA, via the
daemon's.
"""
