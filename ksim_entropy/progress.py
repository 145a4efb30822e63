"""Training progress a person can read: completed-episode statistics over a window of updates, and one console line.

ksim 0.2.10's `episode_length` metric averages, per environment, the lengths of the episodes that ended in a
rollout *together with the age of the episode still running at its end*, so a policy that never falls reads about
half the episode limit once resets have spread out. `EpisodeWindow` keeps what a learning curve needs instead: the
lengths (s) of the episodes that actually ended — by a fall or by the time limit — over the last `updates` PPO updates
(an unbiased estimate of the mean episode length once the window holds a few episodes), and the fraction of them
that ended by the time limit (ksim's `success`).

The console shows `ProgressLine`; every logged record (xax's JSON: state, train metrics, rewards, statuses) goes to
`METRICS_FILE` in the run directory (`ksim_entropy.ppo.mixins.TrainingStateMixin.set_loggers`).
"""

import math
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["METRICS_FILE", "EpisodeWindow", "ProgressLine"]

METRICS_FILE = "metrics.jsonl"  # a run's logged records, one JSON object per line, in its run directory


@dataclass
class EpisodeWindow:
    """Episodes that ended during the last `updates` PPO updates (host-side; fed once per update)."""

    updates: int = 32
    _rows: deque[tuple[float, float, float]] = field(default_factory=deque, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.updates, bool) or not isinstance(self.updates, int) or self.updates < 1:
            raise ValueError(f"EpisodeWindow.updates must be an integer >= 1, got {self.updates!r}")
        self._rows = deque(maxlen=self.updates)

    def add(self, count: float, seconds_sum: float, successes: float) -> None:
        """One update's ended episodes: how many, their summed lengths (s), how many ended by the time limit."""
        if not (count >= 0 and seconds_sum >= 0 and 0 <= successes <= count):
            raise ValueError(f"bad episode counts: {count=}, {seconds_sum=}, {successes=}")
        self._rows.append((float(count), float(seconds_sum), float(successes)))

    @property
    def count(self) -> int:
        return int(sum(r[0] for r in self._rows))

    @property
    def mean_length_s(self) -> float:
        """Mean length (s) of the episodes in the window; NaN while it holds none."""
        n = sum(r[0] for r in self._rows)
        return sum(r[1] for r in self._rows) / n if n else math.nan

    @property
    def success_fraction(self) -> float:
        """Fraction of the window's episodes that ended by the time limit; NaN while it holds none."""
        n = sum(r[0] for r in self._rows)
        return sum(r[2] for r in self._rows) / n if n else math.nan


@dataclass
class ProgressLine:
    """A compact console line per update, printed at most every `every_s` seconds of wall time."""

    every_s: float = 10.0
    start_s: float = field(default_factory=time.monotonic)
    _last_print_s: float = field(default=-math.inf, init=False)

    def format(self, *, update: int, env_steps: int, values: dict[str, float], eta_s: float | None) -> str:
        """`update 120 | 1.2 M env-steps | 1,530 steps/s | episode 3.21 s | ... | 12:34 elapsed, ETA 4:10`."""
        elapsed = time.monotonic() - self.start_s
        rate = env_steps / elapsed if elapsed > 0 else 0.0
        parts = [f"update {update}", f"{env_steps / 1e6:.2f} M env-steps", f"{rate:,.0f} steps/s"]
        parts += [f"{name} {_number(value)}" for name, value in values.items()]
        clock = f"{_clock(elapsed)} elapsed"
        if eta_s is not None and math.isfinite(eta_s):
            clock += f", ETA {_clock(max(eta_s, 0.0))}"
        return " | ".join([*parts, clock])

    def due(self) -> bool:
        """Whether a line is due now (and mark it printed)."""
        now = time.monotonic()
        if now - self._last_print_s < self.every_s:
            return False
        self._last_print_s = now
        return True


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-2 or magnitude >= 1e4):
        return f"{value:.2e}"
    return f"{value:.3g}" if magnitude < 10 else f"{value:.1f}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
