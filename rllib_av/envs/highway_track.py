"""The embedded backend's circuit: one closed road with left and right bends.

Geometry is in metres, x east, y north (y up), headings counter-clockwise,
lateral offsets left-positive (highway-env's lane maths agree with this as long
as we never use its y-down renderer). Lane 0 is the rightmost lane and carries
the route; lanes 1.. lie to its left.

The same segment list gives three views of the road: the highway-env
``RoadNetwork`` the NPCs drive on, a dense centre-line of lane 0 for route
maths, and a grayscale bitmap for the top-down camera.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from highway_env.road.lane import CircularLane, LineType, StraightLane
from highway_env.road.road import RoadNetwork

# (kind, length_m) for straights, (kind, radius_m, turn_deg) for arcs; positive
# turn = left. Closes exactly: two 180-degree hairpins of equal radius joined by
# a bottom straight and a top chicane whose four 45-degree arcs cancel out.
# Hairpins are two 90-degree lanes: highway-env wraps a circular lane's phase
# to +-180 degrees, so on a 180-degree lane a car just past the end would
# appear behind its follower.
_CHICANE_R = 20.0
_HAIRPIN_R = 25.0
_BOTTOM = 80.0
_TOP_STRAIGHT = (_BOTTOM - 4 * _CHICANE_R * np.sin(np.pi / 4)) / 2
SEGMENTS = (
    ("straight", _BOTTOM),
    ("arc", _HAIRPIN_R, 90.0),
    ("arc", _HAIRPIN_R, 90.0),
    ("straight", _TOP_STRAIGHT),
    ("arc", _CHICANE_R, -45.0),
    ("arc", _CHICANE_R, 45.0),
    ("arc", _CHICANE_R, 45.0),
    ("arc", _CHICANE_R, -45.0),
    ("straight", _TOP_STRAIGHT),
    ("arc", _HAIRPIN_R, 90.0),
    ("arc", _HAIRPIN_R, 90.0),
)

CENTRELINE_STEP_M = 0.5
MAP_M_PER_PX = 0.25
# Map gray levels (the camera's palette).
GRASS, ROAD, MARKING = 40, 100, 255
_MARKING_HALF_WIDTH_M = 0.25
_DASH_M = 3.0


@dataclass(frozen=True)
class Centreline:
    """Lane 0's centre sampled every CENTRELINE_STEP_M around one lap."""

    xy: np.ndarray  # (N, 2)
    heading: np.ndarray  # (N,) rad
    s: np.ndarray  # (N,) arc length from the start line, m
    lap_length: float

    def pose_at(self, s: np.ndarray):
        """Positions (.., 2) and headings at arc lengths ``s`` (any lap)."""
        s = np.mod(s, self.lap_length)
        i = np.minimum((s / CENTRELINE_STEP_M).astype(int), len(self.s) - 1)
        ds = s - self.s[i]
        h0 = self.heading[i]
        # Heading grows by (next - this) over one step; the lap's last sample
        # runs up to the start line, one full turn on.
        h1 = np.where(i + 1 < len(self.s), self.heading[(i + 1) % len(self.s)],
                      self.heading[0] + 2 * np.pi)
        step = np.where(i + 1 < len(self.s), CENTRELINE_STEP_M, self.lap_length - self.s[i])
        xy = self.xy[i] + ds[..., None] * np.stack([np.cos(h0), np.sin(h0)], -1)
        return xy, h0 + (h1 - h0) * ds / step

    def project(self, xy: np.ndarray, near: int, window: int = 40):
        """Nearest centre-line index to ``xy``, searched around index ``near``
        (the whole lap once the car is far from it); returns (index,
        s_on_lap, lateral_left_m)."""
        n = len(self.s)
        idx = np.arange(near - window, near + window) % n
        d2 = np.sum((self.xy[idx] - xy) ** 2, axis=1)
        i = int(idx[int(np.argmin(d2))])
        if d2.min() > (window * CENTRELINE_STEP_M / 2) ** 2:
            i = self.nearest_index(xy)
        h = self.heading[i]
        rel = xy - self.xy[i]
        along = rel[0] * np.cos(h) + rel[1] * np.sin(h)
        lateral = -rel[0] * np.sin(h) + rel[1] * np.cos(h)
        return i, (self.s[i] + along) % self.lap_length, float(lateral)

    def project_all(self, xy: np.ndarray):
        """(s_on_lap, lateral_left_m) arrays for many points (n, 2) at once."""
        d2 = np.sum((xy[:, None, :] - self.xy[None]) ** 2, axis=2)
        i = np.argmin(d2, axis=1)
        h = self.heading[i]
        rel = xy - self.xy[i]
        along = rel[:, 0] * np.cos(h) + rel[:, 1] * np.sin(h)
        lateral = -rel[:, 0] * np.sin(h) + rel[:, 1] * np.cos(h)
        return (self.s[i] + along) % self.lap_length, lateral

    def nearest_index(self, xy: np.ndarray) -> int:
        return int(np.argmin(np.sum((self.xy - xy) ** 2, axis=1)))


def _walk():
    """Yield (segment, start_xy, start_heading) around the lap."""
    pos, heading = np.zeros(2), 0.0
    for seg in SEGMENTS:
        yield seg, pos.copy(), heading
        if seg[0] == "straight":
            pos = pos + seg[1] * np.array([np.cos(heading), np.sin(heading)])
        else:
            _, radius, turn = seg
            turn = np.deg2rad(turn)
            normal = np.array([-np.sin(heading), np.cos(heading)]) * np.sign(turn)
            centre = pos + radius * normal
            pos = centre + np.array([[np.cos(turn), -np.sin(turn)],
                                     [np.sin(turn), np.cos(turn)]]) @ (pos - centre)
            heading += turn


def _segment_samples(seg, start, heading, step_m):
    """Centre-line points and headings along one segment (start inclusive)."""
    if seg[0] == "straight":
        s = np.arange(0.0, seg[1], step_m)
        d = np.array([np.cos(heading), np.sin(heading)])
        return start + s[:, None] * d, np.full(len(s), heading)
    _, radius, turn_deg = seg
    sign = np.sign(turn_deg)
    s = np.arange(0.0, radius * np.deg2rad(abs(turn_deg)), step_m)
    h = heading + sign * s / radius
    centre = start + sign * radius * np.array([-np.sin(heading), np.cos(heading)])
    xy = centre + sign * radius * np.stack([np.sin(h), -np.cos(h)], -1)
    return xy, h


@functools.lru_cache(maxsize=None)
def centreline() -> Centreline:
    parts = [_segment_samples(seg, p, h, CENTRELINE_STEP_M) for seg, p, h in _walk()]
    xy = np.concatenate([p[0] for p in parts])
    heading = np.concatenate([p[1] for p in parts])
    lap = sum(s[1] if s[0] == "straight" else s[1] * np.deg2rad(abs(s[2])) for s in SEGMENTS)
    # Segment lengths are not multiples of the step: resample uniformly in s.
    seg_s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    s = np.arange(0.0, lap, CENTRELINE_STEP_M)
    xs = np.interp(s, seg_s, xy[:, 0])
    ys = np.interp(s, seg_s, xy[:, 1])
    hs = np.interp(s, seg_s, np.unwrap(heading))
    return Centreline(np.stack([xs, ys], -1), hs, s, float(lap))


def segment_starts() -> np.ndarray:
    """Arc length along lane 0 where each segment (edge n{i} -> n{i+1}) begins."""
    lengths = [s[1] if s[0] == "straight" else s[1] * np.deg2rad(abs(s[2])) for s in SEGMENTS]
    return np.concatenate([[0.0], np.cumsum(lengths)[:-1]])


def road_network(lanes: int, lane_width: float, speed_limit: float) -> RoadNetwork:
    """The circuit as highway-env lanes, nodes n0 -> n1 -> ... -> n0."""
    net = RoadNetwork()
    n = len(SEGMENTS)
    for i, (seg, start, heading) in enumerate(_walk()):
        normal = np.array([-np.sin(heading), np.cos(heading)])
        for k in range(lanes):
            lines = (LineType.CONTINUOUS if k == 0 else LineType.STRIPED,
                     LineType.CONTINUOUS if k == lanes - 1 else LineType.NONE)
            if seg[0] == "straight":
                a = start + k * lane_width * normal
                b = a + seg[1] * np.array([np.cos(heading), np.sin(heading)])
                lane = StraightLane(a, b, width=lane_width, line_types=lines,
                                    speed_limit=speed_limit)
            else:
                _, radius, turn_deg = seg
                sign = np.sign(turn_deg)
                centre = start + sign * radius * normal
                phase = heading - sign * np.pi / 2
                lane = CircularLane(centre, radius - sign * k * lane_width, phase,
                                    phase + np.deg2rad(turn_deg), clockwise=sign > 0,
                                    width=lane_width, line_types=lines,
                                    speed_limit=speed_limit)
            net.add_lane(f"n{i}", f"n{(i + 1) % n}", lane)
    return net


@dataclass(frozen=True)
class RoadMap:
    """A grayscale bitmap of the road, y up: row 0 is the northern edge."""

    pixels: np.ndarray  # uint8 (H, W)
    x_min: float
    y_max: float
    m_per_px: float


@functools.lru_cache(maxsize=8)
def road_map(lanes: int, lane_width: float, margin_m: float = 60.0) -> RoadMap:
    """Rasterize the road once per process (about a second; then cached)."""
    from scipy.spatial import cKDTree

    line = centreline()
    lo = line.xy.min(0) - margin_m
    hi = line.xy.max(0) + margin_m
    w = int(np.ceil((hi[0] - lo[0]) / MAP_M_PER_PX))
    h = int(np.ceil((hi[1] - lo[1]) / MAP_M_PER_PX))
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    px = np.stack([lo[0] + (cols.ravel() + 0.5) * MAP_M_PER_PX,
                   hi[1] - (rows.ravel() + 0.5) * MAP_M_PER_PX], -1)
    _, i = cKDTree(line.xy).query(px)
    hd = line.heading[i]
    rel = px - line.xy[i]
    lat = -rel[:, 0] * np.sin(hd) + rel[:, 1] * np.cos(hd)
    s = line.s[i]
    half = lane_width / 2
    pixels = np.full(len(px), GRASS, np.uint8)
    pixels[(lat >= -half) & (lat <= (lanes - 1) * lane_width + half)] = ROAD
    for edge in (-half, (lanes - 1) * lane_width + half):
        pixels[np.abs(lat - edge) <= _MARKING_HALF_WIDTH_M] = MARKING
    dashed = np.mod(s, 2 * _DASH_M) < _DASH_M
    for k in range(1, lanes):
        pixels[(np.abs(lat - (k * lane_width - half)) <= _MARKING_HALF_WIDTH_M) & dashed] = MARKING
    return RoadMap(pixels.reshape(h, w), float(lo[0]), float(hi[1]), MAP_M_PER_PX)
