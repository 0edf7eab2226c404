"""`edgedetect bench --plot`: the figures as one PNG (matplotlib, the `plot` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedetect.errors import UserError


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a Pi running as a service
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'edgedetect[plot]'") from None
    runs = report.get("per_threads")
    if not runs:
        raise UserError("--plot draws the throughput run; it has nothing to draw for --memory or --gating")
    keys = list(runs)
    fig, (ax_fps, ax_stage, ax_lat) = plt.subplots(1, 3, figsize=(14, 4.2))

    width = 0.25
    for i, (name, label) in enumerate((("raw_invoke_fps", "raw invoke"), ("naive_fps", "naive loop"),
                                       ("pipeline_fps", "pipeline"))):
        xs = [j + (i - 1) * width for j in range(len(keys))]
        ax_fps.bar(xs, [runs[k][name] for k in keys], width, label=label)
    ax_fps.set_xticks(range(len(keys)), [f"{k} thr" for k in keys])
    ax_fps.set_ylabel("frames per second")
    ax_fps.set_title("throughput (pipeline: JPEG to one viewer)")
    ax_fps.legend(fontsize=8)

    stages = report["stage_ms"]
    bottom = 0.0
    for name, ms in stages.items():
        ax_stage.bar([0], [ms], 0.5, bottom=bottom, label=f"{name} {ms:.2f}")
        bottom += ms
    ax_stage.set_xticks([0], [f"naive loop, {report['threads']} thr"])
    ax_stage.set_ylabel("ms per frame")
    ax_stage.set_title("where a frame's time goes")
    ax_stage.legend(fontsize=8)

    for k in keys:
        lat = runs[k]["latency_ms"]
        ax_lat.plot(["p50", "p95", "p99"], [lat["p50"], lat["p95"], lat["p99"]], marker="o", label=f"{k} thr")
        ax_lat.axhline(runs[k]["paced_invoke_ms"], linestyle=":", linewidth=1)
    ax_lat.set_ylabel("ms, capture to publish")
    ax_lat.set_title("latency at the source's own rate (dotted: invoke)")
    ax_lat.legend(fontsize=8)

    fig.suptitle(f"edgedetect bench: {report['model']} on {report['source']}, {report['cpu_count']} cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
