"""Run by tests/test_data_parallel.py with two CPU devices: the fit with its candidates on one device and on two.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/fit_devices_probe.py OUT_DIR

Writes OUT_DIR/fit_devices.json: both fits' fitted.json contents and loss histories, and the largest difference of
one batch of replays (5 candidates: an odd count, padded to 6 on two devices).
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.fit import FitOptions, fit_randomization
from ksim_entropy.testing.reality import HiddenRobot, reality_log


def main(out_dir: Path) -> None:
    assert len(jax.devices()) == 2, jax.devices()
    hidden = HiddenRobot.random(0, 20)
    log = reality_log(hidden, seconds=12.0, seed=100)
    files = resolve_robot_files("local")
    small = {"windows": 8, "generations": 2, "population": 5, "refine_iterations": 1, "progress": False}
    results = {}
    for devices in ("1", "2"):
        options = FitOptions(**small, mass_scale=hidden.mass_scale, devices=devices)
        result = fit_randomization([log], files, options=options)
        results[devices] = {"fitted": result.fitted.to_dict(), "loss_history": [float(v) for v in result.loss_history]}
        if result.after is not None:
            np.save(out_dir / f"after_{devices}.npy", np.stack(result.after))
    (out_dir / "fit_devices.json").write_text(json.dumps(results))
    print("fit probe done")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
