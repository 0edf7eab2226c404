"""Review items of one camera: the objects whose events overlap in time, grouped into one thing
to look at, with one clip and every object's boxes over time.

Pure: no threads, no clock, no I/O. The events thread tells it when a kept event starts and
ends, where each live object was seen, and the time; it answers with what to do:

    Open(item)            a new item: its folder, and a clip from pre_s before its first object
    Close(item, t)        its last object was last seen at t: the clip runs post_s more
    Resume(item)          an object came back within that post-roll: the clip goes on
    Finish(item, t)       the post-roll has passed: the item ends at t with its boxes
    Cut(item, nxt, ids)   the item reached max_s with objects still in view: it finishes, and
                          `nxt` goes on from the same moment with those objects (ids)

An object that starts while an item is open or in its post-roll joins it, so no two clips of a
camera cover the same seconds. Times are capture times (clock.now()).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

from edgedetect.tracking.tracker import Box

BOX_STEP_S = 0.1  # boxes kept at most this often per object (10 a second is smooth on playback)


@dataclass(slots=True)
class Boxes:
    """One object's boxes over time within an item."""

    label: str
    t: list[float] = field(default_factory=list)
    box: list[Box] = field(default_factory=list)


@dataclass(slots=True)
class Item:
    id: str
    start_t: float  # its first object's start (or, for the piece after a cut, the cut)
    clip_from_t: float  # where its clip begins: start_t - pre_s, or the cut
    objects: list[str] = field(default_factory=list)  # event ids, in the order they joined
    live: set[str] = field(default_factory=set)
    last_end_t: float | None = None  # set while no object is live
    boxes: dict[str, Boxes] = field(default_factory=dict)

    def live_objects(self) -> list[str]:
        return [e for e in self.objects if e in self.live]

    def saw(self, event_id: str, label: str, t: float, box: Box) -> None:
        b = self.boxes.get(event_id)
        if b is None:
            b = self.boxes[event_id] = Boxes(label)
        if b.t and t - b.t[-1] < BOX_STEP_S - 1e-3:
            return
        b.t.append(t)
        b.box.append(box)


@dataclass(frozen=True, slots=True)
class Open:
    item: Item


@dataclass(frozen=True, slots=True)
class Close:
    item: Item
    t: float


@dataclass(frozen=True, slots=True)
class Resume:
    item: Item


@dataclass(frozen=True, slots=True)
class Finish:
    item: Item
    t: float


@dataclass(frozen=True, slots=True)
class Cut:
    item: Item
    next: Item
    t: float
    continuing: tuple[str, ...]


Step = Union[Open, Close, Resume, Finish, Cut]


class Grouper:
    def __init__(self, pre_s: float, post_s: float, max_s: float, new_id: Callable[[float], str]):
        self.pre_s, self.post_s, self.max_s = pre_s, post_s, max_s
        self._new_id = new_id  # an item id for a start time
        self.item: Item | None = None
        self._labels: dict[str, str] = {}  # live event id -> label

    def started(self, event_id: str, label: str, t: float) -> list[Step]:
        """A kept event started (its object first seen at t); the item it is in is self.item."""
        steps: list[Step] = []
        it = self.item
        if it is None:
            it = self.item = Item(self._new_id(t), t, t - self.pre_s)
            steps.append(Open(it))
        elif not it.live:
            it.last_end_t = None
            steps.append(Resume(it))
        it.objects.append(event_id)
        it.live.add(event_id)
        self._labels[event_id] = label
        return steps

    def ended(self, event_id: str, t: float) -> list[Step]:
        """A kept event ended: its object was last seen at t."""
        it = self.item
        self._labels.pop(event_id, None)
        if it is None or event_id not in it.live:
            return []
        it.live.discard(event_id)
        if it.live:
            return []
        it.last_end_t = t
        return [Close(it, t)]

    def seen(self, t: float, positions: Iterable[tuple[str, Box]]) -> None:
        """Where the item's live objects were seen in the frame captured at t."""
        it = self.item
        if it is None:
            return
        for event_id, box in positions:
            if event_id in it.live:
                it.saw(event_id, self._labels.get(event_id, ""), t, box)

    def due(self, now: float) -> list[Step]:
        """The item finished once its post-roll has passed, or cut at its longest."""
        it = self.item
        if it is None:
            return []
        if not it.live:
            if it.last_end_t is not None and now >= it.last_end_t + self.post_s:
                self.item = None
                return [Finish(it, it.last_end_t)]
            return []
        if now - it.clip_from_t >= self.max_s:
            nxt = Item(self._new_id(now), now, now, it.live_objects(), set(it.live))
            self.item = nxt
            return [Cut(it, nxt, now, tuple(nxt.objects))]
        return []

    def flush(self, now: float) -> list[Step]:
        """Everything finished (the daemon is stopping): the item ends now or at its last sighting."""
        it, self.item = self.item, None
        if it is None:
            return []
        return [Finish(it, it.last_end_t if it.last_end_t is not None else now)]


def boxes_json(item: Item, wall: Callable[[float], float]) -> dict:
    """What boxes.json holds: each object's label, times (wall-clock seconds from `t0`, 2
    decimals) and boxes (normalised xmin, ymin, xmax, ymax, 3 decimals)."""
    t0 = round(wall(item.start_t), 3)
    return {"t0": t0, "objects": {
        eid: {"label": b.label, "t": [round(wall(t) - t0, 2) for t in b.t],
              "box": [[round(v, 3) for v in box] for box in b.box]}
        for eid, b in item.boxes.items() if b.t}}
