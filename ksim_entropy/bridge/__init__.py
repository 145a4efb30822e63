"""The information bridge between simulation and a real robot: pure arrays (NumPy/SciPy), never imports ksim.

- `logs`: streaming reader and writer of the one log schema (`ksim_entropy.formats.schema.StepLog`) for real robot
  logs (kinfer NDJSON) and simulated rollouts; reports dropped lines, truncation, NaN, wrong widths and suspected
  degrees.
- `metrics`: sim-vs-real distances per channel and per group (entropy, KL, W1/W2/sliced W, MMD, MI, KS, ...).
- `diagnose`: names why a transfer fails (observation, sensor noise, dynamics, temporal, overconfident policy,
  swapped/mis-scaled).
- `verify`: per-step transfer events and a hash-stamped VERIFIED/FAILED bundle.
- `report`: the gap report (HTML + PNG + JSON; imports matplotlib, so it is not imported here).
The files it shares with training (log schema, entropy profile, `fitted.json`) are in `ksim_entropy.formats`,
re-exported here. Command line: `python -m ksim_entropy.bridge gap --sim SIM --real REAL --out DIR`,
`... profile LOG --out FILE`.
"""

from ksim_entropy.bridge.logs import LogReadError, iter_ndjson, read_ndjson, write_ndjson
from ksim_entropy.formats.profile import EntropyProfile, EntropyProfileError, GroupProfile
from ksim_entropy.formats.schema import CHANNEL_GROUPS, LogReport, StepLog

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
