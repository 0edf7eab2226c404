"""Tracking: each inferred frame's detections, filtered by the scene (zones, masks, per-label
limits), followed across frames into typed events (start, update, end) that the event store and
MQTT consume. No threads and no I/O of its own."""
