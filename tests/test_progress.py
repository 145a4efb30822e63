"""EpisodeWindow against a renewal process simulated here; ProgressLine formatting; the mixin's per-update counts."""

import math

import numpy as np
import pytest

from ksim_entropy.progress import EpisodeWindow, ProgressLine


def test_window_mean_is_the_mean_episode_length_of_a_renewal_process():
    # 64 environments run back-to-back episodes of exponential length (mean 3 s, capped at 20 s = success), observed
    # in 0.64 s rollouts. The window's mean of ended episodes converges to E[min(L, 20)] = 3 (1 − e^{−20/3}).
    rng = np.random.default_rng(0)
    rollout_s, envs, cap = 0.64, 64, 20.0
    window = EpisodeWindow(updates=2000)
    remaining = np.minimum(rng.exponential(3.0, envs), cap)
    lengths = remaining.copy()
    for _ in range(2000):
        count = seconds = successes = 0.0
        t = np.zeros(envs)
        while True:
            ends = remaining <= rollout_s - t
            if not ends.any():
                break
            count += ends.sum()
            seconds += lengths[ends].sum()
            successes += (lengths[ends] >= cap).sum()
            t[ends] += remaining[ends]
            new = np.minimum(rng.exponential(3.0, ends.sum()), cap)
            remaining[ends], lengths[ends] = new, new
        remaining -= rollout_s - t
        window.add(count, seconds, successes)
    expected = 3.0 * (1.0 - math.exp(-cap / 3.0))
    assert window.mean_length_s == pytest.approx(expected, rel=0.02)
    assert window.success_fraction == pytest.approx(math.exp(-cap / 3.0), abs=0.002)


def test_window_forgets_old_updates():
    window = EpisodeWindow(updates=2)
    assert math.isnan(window.mean_length_s) and math.isnan(window.success_fraction) and window.count == 0
    window.add(2, 2.0, 0)  # two 1 s episodes
    window.add(0, 0.0, 0)
    window.add(1, 20.0, 1)  # the first update leaves the window
    assert window.count == 1
    assert window.mean_length_s == pytest.approx(20.0)
    assert window.success_fraction == pytest.approx(1.0)


@pytest.mark.parametrize("row", [(-1, 0.0, 0), (1, -2.0, 0), (1, 1.0, 2)])
def test_window_refuses_impossible_counts(row):
    with pytest.raises(ValueError, match="bad episode counts"):
        EpisodeWindow().add(*row)


@pytest.mark.parametrize("updates", [0, -3, 2.5, True])
def test_window_refuses_a_bad_size(updates):
    with pytest.raises(ValueError, match="updates"):
        EpisodeWindow(updates=updates)


def test_progress_line():
    line = ProgressLine(every_s=10.0, start_s=0.0)
    line.start_s = __import__("time").monotonic() - 100.0
    text = line.format(update=120, env_steps=123_000, values={"episode s": 3.214, "α": 4e-3, "H": math.nan}, eta_s=250)
    parts = text.split(" | ")
    assert parts[0] == "update 120" and parts[1] == "0.12 M env-steps"
    assert parts[2].endswith("steps/s") and 1_150 <= float(parts[2].split()[0].replace(",", "")) <= 1_240
    assert "episode s 3.21" in parts and "α 4.00e-03" in parts and "H -" in parts
    assert parts[-1].startswith("1:4") and parts[-1].endswith("elapsed, ETA 4:10")
    assert line.due() and not line.due()  # printed now: the next one waits every_s


def test_start_up_noise_is_filtered_at_its_loggers_and_nothing_else():
    import logging

    from ksim_entropy.runtime import quiet_start_up_logs

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        quiet_start_up_logs()
        quiet_start_up_logs()  # idempotent: one filter per logger
        assert sum(type(f).__name__ == "_DropMessages" for f in root.filters) == 1
        logging.getLogger("xax.task.mixins.compile").info("Setting JAX logging level to %s", "INFO")
        logging.getLogger("xax.task.mixins.compile").info("Disabling JIT compilation")
        logging.info("Using JAX default device: %s.", "TFRT_CPU_0")
        logging.getLogger("xax.task.mixins.cpu_stats").error("Closing CPU stats monitor")
        logging.getLogger("ksim_entropy.ppo.mixins").info("Setting JAX logging level to INFO")  # another logger: kept
        logging.warning("the device is slow")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert seen == ["Disabling JIT compilation", "Setting JAX logging level to INFO", "the device is slow"]
