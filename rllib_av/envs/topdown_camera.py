"""A fast ego-aligned top-down camera: numpy gathers from a pre-rasterized road
map plus rotated vehicle rectangles, about 0.1 ms a frame at 84x84.

highway-env's pygame renderer draws every lane and vehicle with Python calls
per frame (milliseconds); this renders the same scene (road surface, lane
markings, vehicles) by sampling ``highway_track.road_map`` instead.
"""

from __future__ import annotations

import numpy as np

from rllib_av.envs.highway_track import RoadMap

EGO, NPC = 230, 170  # gray levels of the ego vehicle and of other vehicles


class TopDownCamera:
    """``size`` x ``size`` pixels, ego at ``ego_row_fraction`` down the image,
    facing up, ``m_per_px`` metres per pixel."""

    def __init__(self, road: RoadMap, size: int, m_per_px: float,
                 ego_row_fraction: float = 0.75):
        self.road = road
        self.size = size
        self.m_per_px = m_per_px
        self.ego_rc = (size * ego_row_fraction, size / 2 - 0.5)
        rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
        # Ego-frame coordinates of each pixel centre: x forward (up), y left.
        self._fwd = ((self.ego_rc[0] - rows) * m_per_px).ravel()
        self._left = ((self.ego_rc[1] - cols) * m_per_px).ravel()

    def render(self, ego_xy, ego_heading: float, vehicles) -> np.ndarray:
        """uint8 (size, size). ``vehicles``: iterable of (xy, heading, length,
        width, gray), the ego included."""
        c, s = np.cos(ego_heading), np.sin(ego_heading)
        wx = ego_xy[0] + c * self._fwd - s * self._left
        wy = ego_xy[1] + s * self._fwd + c * self._left
        m = self.road
        col = ((wx - m.x_min) / m.m_per_px).astype(np.intp)
        row = ((m.y_max - wy) / m.m_per_px).astype(np.intp)
        h, w = m.pixels.shape
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        frame = np.zeros(self.size * self.size, np.uint8)
        frame[inside] = m.pixels[row[inside], col[inside]]
        frame = frame.reshape(self.size, self.size)
        for xy, heading, length, width, gray in vehicles:
            self._draw_box(frame, ego_xy, c, s, ego_heading, xy, heading, length, width, gray)
        return frame

    def _draw_box(self, frame, ego_xy, c, s, ego_heading, xy, heading, length, width, gray):
        dx, dy = xy[0] - ego_xy[0], xy[1] - ego_xy[1]
        fwd, left = c * dx + s * dy, -s * dx + c * dy
        rc, cc = self.ego_rc[0] - fwd / self.m_per_px, self.ego_rc[1] - left / self.m_per_px
        reach = 0.5 * np.hypot(length, width) / self.m_per_px + 1
        r0, r1 = max(int(rc - reach), 0), min(int(rc + reach) + 2, self.size)
        c0, c1 = max(int(cc - reach), 0), min(int(cc + reach) + 2, self.size)
        if r0 >= r1 or c0 >= c1:
            return
        rows, cols = np.mgrid[r0:r1, c0:c1]
        # Pixel centres relative to the box, in the box's own frame.
        pf = (rc - rows) * self.m_per_px
        pl = (cc - cols) * self.m_per_px
        rel = heading - ego_heading
        cr, sr = np.cos(rel), np.sin(rel)
        along = cr * pf + sr * pl
        across = -sr * pf + cr * pl
        inside = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
        frame[r0:r1, c0:c1][inside] = gray
