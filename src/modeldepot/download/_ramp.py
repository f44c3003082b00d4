"""How many connections one download uses: one at first, doubled after each window while it pays.

A first stream already moving ``fast_stream_bps`` (loopback, LAN: the CPU is the limit) gets no
company. Otherwise, after each ``ramp_probe_seconds`` window the connections are doubled, up to
the file's maximum, as long as the last doubling raised the total rate by ``ramp_gain``; one that
did not is taken back (its connections finish their current part and stop). More connections
than help only compete for the cores and lose more in-flight bytes to a kill -9.
"""

from __future__ import annotations

from modeldepot.download.base import DownloadLimits


def ramp_step(conns: int, rate: float, prev_rate: float, want: int, lim: DownloadLimits) -> tuple[int, bool]:
    """After a probe window at ``rate`` bytes/s with ``conns`` connections (``prev_rate`` with half
    as many before): how many connections now, and whether to probe again."""
    if conns > 1 and rate < prev_rate * lim.ramp_gain:
        return max(1, conns // 2), False
    if (conns > 1 or rate < (lim.fast_stream_bps or 0)) and conns < want:
        return min(2 * conns, want), True
    return conns, False


class Ramp:
    """The probe windows of one transfer that may use up to ``want`` connections."""

    def __init__(self, want: int, lim: DownloadLimits, now: float, fetched: int) -> None:
        self.want = want
        self.lim = lim
        self.conns = 1
        #: Without ``fast_stream_bps`` every connection opens at once (no probing).
        self.probing = want > 1 and lim.fast_stream_bps is not None
        self._prev_rate = 0.0
        self._t0, self._b0 = now, fetched

    @property
    def at_once(self) -> int:
        """Connections to open right away, besides the first."""
        return self.want - 1 if self.want > 1 and not self.probing else 0

    def tick(self, now: float, fetched: int) -> int | None:
        """The connection count to move to when a window just ended (None: no change now)."""
        if not self.probing or now - self._t0 < self.lim.ramp_probe_seconds:
            return None
        rate = (fetched - self._b0) / max(1e-6, now - self._t0)
        target, self.probing = ramp_step(self.conns, rate, self._prev_rate, self.want, self.lim)
        self._prev_rate, self._t0, self._b0 = rate, now, fetched
        return target if target != self.conns else None

    def opened(self, asked: int, got: int) -> None:
        """``got`` of the ``asked`` new connections could open (the queue shares a few slots)."""
        self.conns += got
        if got < asked:
            self.probing = False  # no slot for more: the count stays


__all__ = ["Ramp", "ramp_step"]
