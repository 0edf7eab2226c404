"""What bench reports: the targets as ratios, the thread count chosen, the summary table."""

from __future__ import annotations

import statistics
from typing import Any


# The pipeline's targets, and the decode's: what `bench` checks and says it checked.
MIN_PIPELINE_VS_RAW = 0.9  # the pipeline's rate against the interpreter's alone
MIN_PIPELINE_VS_NAIVE = 1.15  # ... against a single-threaded capture-infer-draw loop
MAX_LATENCY_VS_INVOKE = 1.5  # median capture-to-publish latency, in invokes
MAX_POSTPROCESS_VS_INVOKE = 0.05  # decode + NMS against the invoke (YOLO's raw outputs)
TARGETS_TEXT = (f"pipeline >= {MIN_PIPELINE_VS_RAW:g}x the interpreter alone and >= {MIN_PIPELINE_VS_NAIVE:g}x the "
                f"naive loop, median latency <= {MAX_LATENCY_VS_INVOKE:g} invokes")


def targets(fig: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's three targets (TARGETS_TEXT), as ratios and a pass flag. The fps ratios are the median of
    the per-round ratios: the three loops of one round run seconds apart, so a change in the
    machine's load between rounds cancels out of each round's ratio."""
    rounds = fig["rounds"]

    def ratio(a: str, b: str) -> float:
        pairs = [x / y for x, y in zip(rounds[a], rounds[b]) if y > 0]
        return float(statistics.median(pairs)) if pairs else 0.0

    vs_raw = ratio("pipeline_fps", "raw_invoke_fps")
    vs_naive = ratio("pipeline_fps", "naive_fps")
    lat = fig["latency_ms"]["p50"] / fig["paced_invoke_ms"] if fig["paced_invoke_ms"] else 0.0
    return {
        "pipeline_vs_raw": round(vs_raw, 3),
        "pipeline_vs_naive": round(vs_naive, 3),
        "latency_p50_vs_invoke": round(lat, 3),
        "met": vs_raw >= MIN_PIPELINE_VS_RAW and vs_naive >= MIN_PIPELINE_VS_NAIVE and 0 < lat <= MAX_LATENCY_VS_INVOKE,
    }


def choose(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best split of cores: highest pipeline_fps among thread counts that meet the targets
    (all of them when none does)."""
    ok = [r for r in runs if r["targets"]["met"]] or runs
    return max(ok, key=lambda r: r["pipeline_fps"])


# --- memory soak and motion gating -----------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    """The human-readable summary."""
    lines = [f"model {report['model']}  source {report['source']}  cores {report['cpu_count']}"]
    if "memory" in report:
        m = report["memory"]
        lines += [f"memory soak: {m['frames']} frames, {m['threads']} threads, {m['fps']} fps",
                  f"  rss after warm-up {m['rss_after_warmup_mb']} MB, at end {m['rss_end_mb']} MB, "
                  f"growth {m['rss_growth_mb']} MB, peak {m['rss_peak_mb']} MB"]
        return "\n".join(lines)
    if "gating" in report:
        g = report["gating"]
        lines += [f"motion gating on a still clip ({g['seconds']:g} s each, {g['threads']} threads):",
                  f"  gate off: cpu {g['off']['cpu_percent']}%  inferred {g['off']['inferred_fps']} fps",
                  f"  gate on:  cpu {g['on']['cpu_percent']}%  inferred {g['on']['inferred_fps']} fps  "
                  f"skipped {g['on']['skipped_fps']} fps",
                  f"  cpu reduction {g['cpu_reduction_pct']}%",
                  f"  moving source, gate on: inferred {g['motion_source']['inferred_fps']} fps, "
                  f"skipped {g['motion_source']['skipped_fps']} fps"]
        return "\n".join(lines)
    if "cameras" in report:
        c = report["cameras"]
        one, several, paced = c["one"], c["several"], c["paced"]
        lines += [f"{c['cameras']} camera(s) sharing one detector ({c['threads']} threads, {c['seconds']:g} s each):",
                  f"  one camera, unpaced: {one['fps']:.1f} inferences/s, rss {one['rss_mb']} MB",
                  f"  {c['cameras']} cameras, unpaced: {several['fps']:.1f} inferences/s ({c['throughput_ratio']:.2f} "
                  f"of one), per camera {several['per_camera_fps']}",
                  f"  shares {several['shares']} (largest distance from 1/N: {100 * c['share_spread']:.1f}%)",
                  f"  at their own rate: {paced['fps']:.1f} inferences/s ({c['paced_load']:.2f} of the detector), "
                  f"latency p50 {paced['latency_ms'].get('p50', 0):.1f} ms = {c['latency_p50_invokes']} invokes "
                  f"of {paced['invoke_ms']:.1f} ms (unpaced: {c['latency_p50_invokes_unpaced']})",
                  f"  rss {several['rss_mb']} MB, {c['rss_per_added_camera_mb']} MB per added camera"]
        return "\n".join(lines)
    head = f"{'threads':>7} {'raw fps':>8} {'naive fps':>9} {'pipe fps':>8} {'pipe/raw':>8} {'pipe/naive':>10} " \
           f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'invoke ms':>9} {'cpu %':>6}"
    lines.append(head)
    for key, r in report["per_threads"].items():
        t = r["targets"]
        mark = " *" if r["threads"] == report["threads"] else ""
        lines.append(f"{key:>7} {r['raw_invoke_fps']:>8.1f} {r['naive_fps']:>9.1f} {r['pipeline_fps']:>8.1f} "
                     f"{t['pipeline_vs_raw']:>8.2f} {t['pipeline_vs_naive']:>10.2f} "
                     f"{r['latency_ms']['p50']:>7.1f} {r['latency_ms']['p95']:>7.1f} {r['latency_ms']['p99']:>7.1f} "
                     f"{r['paced_invoke_ms']:>9.1f} {r['cpu_percent']['pipeline']:>6.0f}{mark}")
    s = report["stage_ms"]
    lines.append("per frame (naive loop, threads=%d): " % report["threads"]
                 + "  ".join(f"{k} {v:.2f} ms" for k, v in s.items()))
    if s.get("invoke"):
        share = s["postprocess"] / s["invoke"]
        lines.append(f"decode + NMS: {share:.1%} of invoke (target under {MAX_POSTPROCESS_VS_INVOKE:.0%}): "
                     + ("met" if share < MAX_POSTPROCESS_VS_INVOKE else "NOT met"))
    par = report["parallel"]
    lines.append(f"parallel capacity: {par['effective_cores']} effective cores of {par['cores']} "
                 f"(invoke loop alone {par['invoke_fps_alone']} fps, {par['invoke_fps_each_together']} fps each "
                 f"side by side); without overlap pipe/raw is at most {par['serial_ceiling_pipeline_vs_raw']}")
    lines.append(f"rss: peak {report['rss_mb']['peak']} MB, steady {report['rss_mb']['steady']} MB;  "
                 f"targets {'met' if report['targets']['met'] else 'NOT met'} at threads={report['threads']} "
                 f"(the row marked *): {TARGETS_TEXT}")
    return "\n".join(lines)
