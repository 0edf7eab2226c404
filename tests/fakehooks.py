"""Hooks for an extension under test: records what the extension registers, so a test can call
it the way the daemon would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgedetect.config import Config
from edgedetect.extensions import Hooks


@dataclass
class Registered:
    results: list[Callable] = field(default_factory=list)
    frames: list[Callable] = field(default_factory=list)
    stats: list[Callable] = field(default_factory=list)
    ticks: list[Callable] = field(default_factory=list)
    routes: dict[str, tuple[Callable, tuple[str, ...]]] = field(default_factory=dict)
    figures: dict[str, Callable[[], Any]] = field(default_factory=dict)


def make_hooks(cfg: Config | None = None, source: Any = None, snapshot: Callable[[], dict] = dict,
               model_name: str = "m") -> tuple[Hooks, Registered]:
    reg = Registered()

    def add_route(path: str, handler: Callable, methods: tuple[str, ...] = ("GET",)) -> None:
        reg.routes[path] = (handler, methods)

    hooks = Hooks(cfg=cfg or Config(), model_name=model_name, sources={"camera": source},
                  on_result=reg.results.append, on_frame=reg.frames.append, on_stats=reg.stats.append,
                  on_tick=reg.ticks.append, add_route=add_route,
                  add_figures=lambda k, fn: reg.figures.__setitem__(k, fn), figures=snapshot)
    return hooks, reg
