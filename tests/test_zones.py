"""Zones, masks and per-label filters: geometry, the config's checks and one-line errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VTEST
from edgedetect import config
from edgedetect.errors import ConfigError
from edgedetect.geometry import MAX_POINTS, Outline, inside, polygon_problem
from edgedetect.frames import Detection
from edgedetect.tracking.zones import Scene, foot

SQUARE = ((0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6))


def det(label: str, score: float, box: tuple[float, float, float, float]) -> Detection:
    return Detection(0, label, score, box)


def test_inside_and_foot() -> None:
    assert inside((0.4, 0.4), SQUARE) and not inside((0.7, 0.4), SQUARE) and not inside((0.4, 0.1), SQUARE)
    concave = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.3), (0.0, 1.0))  # a notch from below
    assert inside((0.5, 0.2), concave) and not inside((0.5, 0.6), concave) and inside((0.9, 0.8), concave)
    # an object stands at the bottom centre of its box
    assert foot((0.1, 0.0, 0.3, 0.5)) == (0.2, 0.5)


@pytest.mark.parametrize("points, problem", [
    ([[0.1, 0.1], [0.5, 0.1]], "has 2 points; expected at least 3"),
    ([], "has 0 points"),
    ([[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]], "point 2 [1.2, 0.1] is outside 0..1"),
    ([[0.1, -0.1], [0.9, 0.1], [0.5, 0.5]], "point 1 [0.1, -0.1] is outside 0..1"),
    ([[0, 0], [1, 1], [1, 0], [0, 1]], "self-intersecting (edge 1-2 crosses edge 3-4)"),  # a bow tie
    ([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.5, 0.05], [0.1, 0.9]], "self-intersecting"),  # a spike across an edge
    ([[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]], "has no area"),
    ([[0.1, 0.1], [0.1, 0.1], [0.9, 0.9]], "repeats point 1"),
    ([[0.1, 0.1, 0.3], [0.5, 0.5], [0.9, 0.1]], "point 1 is [0.1, 0.1, 0.3]; expected an [x, y] pair"),
])
def test_bad_polygons(points, problem) -> None:
    why = polygon_problem(points)
    assert why is not None and problem in why, why


def test_good_polygons() -> None:
    assert polygon_problem([list(p) for p in SQUARE]) is None
    assert polygon_problem([[0, 0], [1, 0], [1, 1], [0.5, 0.3], [0, 1]]) is None  # concave is fine
    assert polygon_problem([[0, 0], [1, 0], [0, 1]]) is None  # frame corners


def write(tmp: Path, text: str) -> Path:
    p = tmp / "edgedetect.toml"
    p.write_text(text)
    return p


ZONES = """
[detect.labels.person]
min_score = 0.6
max_area = 0.2
[detect.labels.car]
min_area = 0.01
[[zones]]
name = "path"
polygon = [[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]]
labels = ["person"]
min_score = 0.7
[[zones]]
name = "all-right"
polygon = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
[[masks]]
polygon = [[0.0, 0.8], [1.0, 0.8], [1.0, 1.0], [0.0, 1.0]]
[[masks]]
polygon = [[0.0, 0.0], [0.1, 0.0], [0.1, 0.1]]
labels = ["car"]
"""


def test_scene_from_config_filters_masks_and_zones(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ZONES))
    scene = Scene.from_config(cfg)
    assert [z.name for z in scene.zones] == ["path", "all-right"] and len(scene.masks) == 2
    person = det("person", 0.8, (0.3, 0.3, 0.4, 0.5))  # foot (0.35, 0.5): in "path"
    assert scene.keep([person]) == [person]
    assert scene.zones_of(person) == ("path",)
    assert scene.zones_of(det("person", 0.65, person.box)) == ()  # the zone's own min_score
    assert scene.zones_of(det("dog", 0.9, person.box)) == ()  # the zone's labels
    assert scene.zones_of(det("dog", 0.9, (0.7, 0.1, 0.8, 0.4))) == ("all-right",)
    # per-label filters: score and area
    assert scene.keep([det("person", 0.55, person.box)]) == []
    assert scene.keep([det("person", 0.9, (0.0, 0.0, 0.6, 0.6))]) == []  # 0.36 of the frame > max_area 0.2
    assert scene.keep([det("car", 0.9, (0.5, 0.5, 0.55, 0.55))]) == []  # 0.0025 < min_area 0.01
    assert len(scene.keep([det("car", 0.9, (0.5, 0.5, 0.7, 0.7))])) == 1
    # masks test the bottom centre: a box reaching into the mask from above is kept
    assert scene.keep([det("person", 0.9, (0.4, 0.5, 0.5, 0.85))]) == []  # foot at y 0.85: masked
    assert len(scene.keep([det("person", 0.9, (0.4, 0.5, 0.5, 0.75))])) == 1  # foot at y 0.75: seen
    # a mask with labels hides only those
    corner_car = det("car", 0.9, (0.0, 0.0, 0.09, 0.05))
    corner_kite = det("kite", 0.9, (0.0, 0.0, 0.09, 0.05))
    assert scene.keep([corner_car, corner_kite]) == [corner_kite]
    overlay = scene.as_json()
    assert overlay["zones"][0] == {"name": "path", "polygon": [[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]],
                                   "labels": ["person"]}
    assert len(overlay["masks"]) == 2


def test_zones_config_round_trip(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ZONES + '[record]\nenabled = true\nlabels = []\n'))
    assert cfg.detect.labels["person"].min_score == 0.6 and cfg.record.enabled and cfg.record.labels == []
    again = config.load(write(tmp_path, config.to_toml(cfg)))
    assert again == cfg


@pytest.mark.parametrize("text, message", [
    ('[[zones]]\nname = "door"\npolygon = [[0.1, 0.1], [0.5, 0.1]]\n',
     "zone 'door': polygon has 2 points; expected at least 3 [x, y] pairs"),
    ('[[zones]]\nname = "door"\npolygon = [[0.1, 0.1], [0.5, 0.1], [1.5, 0.5]]\n',
     "zone 'door': polygon point 3 [1.5, 0.5] is outside 0..1"),
    ('[[zones]]\nname = "door"\npolygon = [[0, 0], [1, 1], [1, 0], [0, 1]]\n',
     "zone 'door': polygon is self-intersecting"),
    ('[[masks]]\npolygon = [[0, 0], [1, 1]]\n', "masks[0]: polygon has 2 points"),
    ('[[zones]]\nname = "door"\npolgon = [[0, 0], [1, 0], [1, 1]]\n',
     "zones[0]: unknown key 'polgon' (did you mean 'polygon'?)"),
    ('[[zones]]\nname = "a door"\npolygon = [[0, 0], [1, 0], [1, 1]]\n', "zones[0].name: expected a name of letters"),
    ('[[zones]]\nname = "d"\npolygon = [[0, 0], [1, 0], [1, 1]]\n[[zones]]\nname = "d"\npolygon = [[0, 0], [1, 0], [1, 1]]\n',
     "zone 'd': the name is used twice"),
    ('[[zones]]\nname = "d"\npolygon = [[0, 0], [1, 0], [1, 1]]\nmin_area = 0.5\nmax_area = 0.1\n',
     "zone 'd': min_area 0.5 is above max_area 0.1"),
    ('[[zones]]\nname = "d"\npolygon = "0,0 1,0 1,1"\n', "zones[0].polygon: expected a list of [x, y] pairs"),
    ('[zones]\nname = "d"\n', "zones: expected an array of tables ([[zones]])"),
    ('[[zone]]\nname = "d"\n', "unknown key 'zone' (did you mean 'zones'?)"),
    ('[detect.labels.person]\nmin_scor = 0.5\n', "detect.labels.person: unknown key 'min_scor' (did you mean 'min_score'?)"),
    ('[detect.labels.person]\nmin_score = 2\n', "detect.labels.person.min_score: expected a value from 0 to 1, got 2"),
    ('[detect]\nlabels = 3\n', "detect.labels: expected a table, got 3"),
    ('[record]\npre_s = 100\n', "record.pre_s: expected a value from 0 to 60, got 100"),
    ('[record]\nenabeld = true\n', "unknown key 'enabeld' (did you mean 'enabled'?)"),
])
def test_config_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert message in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("body, expected", [
    ('[[zones]]\nname = "hall"\npolygon = [[0.1, 0.1], [0.9, 0.1]]\n', "zone 'hall': polygon has 2 points"),
    ('[[zones]]\nname = "hall"\npolygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 1.2]]\n', "zone 'hall': polygon point 3"),
    ('[[zones]]\nname = "hall"\npolygon = [[0, 0], [1, 1], [1, 0], [0, 1]]\n', "zone 'hall': polygon is self-intersecting"),
    (f'[[zones]]\nname = "hall"\npolygon = {[[0.5 + 0.4 * math.cos(i / 20), 0.5 + 0.4 * math.sin(i / 20)] for i in range(125)]}\n',
     "zone 'hall': polygon has 125 points; expected at most 100"),
])
def test_bad_polygon_run_exits_2_with_one_line(tmp_path: Path, body: str, expected: str) -> None:
    p = write(tmp_path, body)
    r = subprocess.run([sys.executable, "-m", "edgedetect", "run", "--config", str(p), "--source", str(VTEST),
                        "--port", "0"], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1 and expected in errors[0], r.stderr
    assert "Traceback" not in r.stderr


# --- bounds: points per polygon, zones and masks (issue 22 item 5) -------------------------------


def ring(n: int, cx: float = 0.5, cy: float = 0.5, r: float = 0.4, inner: float | None = None) -> list[list[float]]:
    """n corners around (cx, cy); with `inner`, every other corner at that radius (a star)."""
    return [[cx + (r if inner is None or i % 2 == 0 else inner) * math.cos(2 * math.pi * i / n),
             cy + (r if inner is None or i % 2 == 0 else inner) * math.sin(2 * math.pi * i / n)] for i in range(n)]


def zones_toml(n: int, points: int, masks: int = 0) -> str:
    text = "".join(f'[[zones]]\nname = "z{k}"\npolygon = {ring(points, r=0.3 + k * 0.002)}\n' for k in range(n))
    return text + "".join(f"[[masks]]\npolygon = {ring(points, 0.1, 0.1, 0.05)}\n" for _ in range(masks))


def one_line(p: Path) -> str:
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_polygon_over_the_point_limit_is_one_line(tmp_path: Path) -> None:
    # a clean ring, fine but for its size: refused on the count, before its edges are compared
    p = write(tmp_path, f'[[zones]]\nname = "ring"\npolygon = {ring(MAX_POINTS + 1)}\n')
    assert one_line(p) == f"{p}: zone 'ring': polygon has 101 points; expected at most 100"
    p = write(tmp_path, f"[[masks]]\npolygon = {ring(10_000)}\n")
    assert one_line(p) == f"{p}: masks[0]: polygon has 10000 points; expected at most 100"


def test_zone_and_mask_counts_over_the_limit_are_one_line(tmp_path: Path) -> None:
    p = write(tmp_path, zones_toml(51, 4))
    assert one_line(p) == f"{p}: zones: 51 [[zones]] tables; expected at most 50"
    p = write(tmp_path, zones_toml(1, 4, masks=51))
    assert one_line(p) == f"{p}: masks: 51 [[masks]] tables; expected at most 50"


def test_largest_allowed_scene_validates_and_contains_right(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, zones_toml(50, 100, masks=50)))
    scene = Scene.from_config(cfg)
    assert len(scene.zones) == 50 and len(scene.masks) == 50 and len(scene.zones[0].polygon) == 100
    # rings of radius 0.300 .. 0.398 around the centre: a foot at distance d is in the rings wider than d
    for d, expected in ((0.0, 50), (0.25, 50), (0.3 + 24.5 * 0.002, 25), (0.41, 0)):
        box = (0.45, 0.2, 0.55, 0.5 + d)  # foot at (0.5, 0.5 + d)
        assert len(scene.zones_at("person", 0.9, box)) == expected, d
    assert scene.zones_at("person", 0.9, (0.45, 0.2, 0.55, 0.5 + 0.36)) == tuple(f"z{k}" for k in range(31, 50))
    # the masks: a ring of radius 0.05 around (0.1, 0.1)
    hidden, seen = det("car", 0.9, (0.05, 0.0, 0.15, 0.12)), det("car", 0.9, (0.05, 0.0, 0.15, 0.16))
    assert scene.keep([hidden, seen]) == [seen]


@pytest.mark.parametrize("polygon", [
    tuple(map(tuple, ring(100))),
    tuple(map(tuple, ring(100, 0.4, 0.6, 0.35, inner=0.1))),  # a star: 50 spikes, a concave outline
    ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.3), (0.0, 1.0)),
    tuple(map(tuple, SQUARE)),
])
def test_outline_agrees_with_the_plain_test(polygon) -> None:
    """The bounding box and bands give the even-odd answer of every edge tried in turn."""
    outline = Outline.of(polygon)
    grid = [((i + 0.5) / 97, (j + 0.5) / 89) for i in range(97) for j in range(89)]
    answers = [outline.holds(p) for p in grid]
    assert answers == [inside(p, polygon) for p in grid]
    assert 100 < sum(answers) < len(grid) - 100  # both answers are exercised
