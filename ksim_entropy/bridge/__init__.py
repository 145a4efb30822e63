"""The information bridge between simulation and a real robot: pure arrays (NumPy/SciPy), never imports ksim.

- `schema` / `logs`: one log schema for real robot logs (kinfer NDJSON) and simulated rollouts; streaming reader
  that reports dropped lines, truncation, NaN, wrong widths and suspected degrees.
- `metrics`: sim-vs-real distances per channel and per group (entropy, KL, W1/W2/sliced W, MMD, MI, KS, ...).
- `diagnose`: names why a transfer fails (observation, sensor noise, dynamics, temporal, overconfident policy,
  swapped/mis-scaled).
- `verify`: per-step transfer events and a hash-stamped VERIFIED/FAILED bundle.
- `profile`: a log's entropy profile (per-channel mean/std, diagonal-Gaussian entropy, W2), saved as JSON and loaded
  by training code as a target.
- `report`: the gap report (HTML + PNG + JSON; imports matplotlib, so it is not imported here).
Command line: `python -m ksim_entropy.bridge gap --sim SIM --real REAL --out DIR`, `... profile LOG --out FILE`.
"""

from ksim_entropy.bridge.logs import LogReadError, iter_ndjson, read_ndjson, write_ndjson
from ksim_entropy.bridge.profile import EntropyProfile, EntropyProfileError, GroupProfile
from ksim_entropy.bridge.schema import CHANNEL_GROUPS, LogReport, StepLog

__all__ = [
    "CHANNEL_GROUPS",
    "EntropyProfile",
    "EntropyProfileError",
    "GroupProfile",
    "LogReadError",
    "LogReport",
    "StepLog",
    "iter_ndjson",
    "read_ndjson",
    "write_ndjson",
]
