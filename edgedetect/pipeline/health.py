"""Is the pipeline alive? One set of rules, read by /healthz and by systemd's watchdog."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    ok: bool  # the watchdog may be pinged
    state: str  # short word for STATUS: starting, running, stalled, reconnecting, ended


def progress(first_result: bool, source_state: str, last_result_t: float, capture_idle_s: float,
             now: float, stall_timeout: float) -> Progress:
    """Whether the pipeline is alive, from what the daemon records.

    - running: alive only while the source delivers and results come, each within
      stall_timeout. A camera hung in read() and an inference that never returns both stop
      the pings.
    - reconnecting: alive while the capture thread shows progress (its backoff sleeps do not
      count as idle). An unplugged camera or a stream that is down then does not become a
      restart loop that ends at systemd's start limit; the daemon reconnects by itself. A
      source that hangs again is restarted by the daemon a few times and then marked failed.
    - ended: a file source without loop has finished; there is nothing left to process.
    - failed (or anything else): no pings, so systemd restarts the service.
    """
    if not first_result:
        return Progress(False, "starting")
    if source_state == "running":
        if capture_idle_s > stall_timeout:
            return Progress(False, f"stalled: no frame from the source for {capture_idle_s:.0f} s")
        idle = now - last_result_t
        if idle > stall_timeout:
            return Progress(False, f"stalled: no frame processed for {idle:.0f} s")
        return Progress(True, "running")
    if source_state == "reconnecting":
        if capture_idle_s > stall_timeout:
            return Progress(False, f"stalled: reconnecting, no progress for {capture_idle_s:.0f} s")
        return Progress(True, "reconnecting")
    if source_state == "ended":
        return Progress(True, "ended")
    if source_state == "failed":
        return Progress(False, "stalled: the source failed (no frame after restarts)")
    return Progress(False, f"stalled: source {source_state or 'unknown'}")


def detector_progress(first_result: bool, cameras: list[Progress]) -> Progress:
    """The whole pipeline's health from its cameras': alive while the detector progresses on any
    camera. With one camera, that camera's rule as above; with several, a camera that is away
    (reconnecting, failed) is its own page's problem as long as another one runs."""
    if not first_result:
        return Progress(False, "starting")
    if len(cameras) == 1:
        return cameras[0]
    for want in ("running", "reconnecting", "ended"):
        if any(c.ok and c.state == want for c in cameras):
            return Progress(True, want)
    return Progress(False, "stalled: no camera progresses (" + ", ".join(c.state for c in cameras) + ")")
