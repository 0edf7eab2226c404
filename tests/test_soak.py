"""The soak run in CI: 2 minutes of viewers coming and going and the camera dropping out."""

from __future__ import annotations

import os

import pytest

from soak import RSS_GROWTH_LIMIT_MB, soak

SECONDS = float(os.environ.get("EDGEDETECT_SOAK_SECONDS", "120"))


@pytest.mark.slow
def test_soak_leaks_nothing():
    report = soak(SECONDS)
    print(report)
    assert report["cycles"] >= 3 and report["frames_inferred"] > 100
    assert report["rss_growth_mb"] < RSS_GROWTH_LIMIT_MB, report
    assert report["end"]["threads"] == report["start"]["threads"], report
    assert report["end"]["fds"] == report["start"]["fds"], report
    assert report["exit_code"] == 0 and report["shutdown_s"] < 2.0, report
