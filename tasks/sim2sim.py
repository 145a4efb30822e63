"""The sim-to-sim gate: `python -m tasks.sim2sim` runs `ksim_entropy.cli.sim2sim` (installed: `ksim-sim2sim`)."""

from ksim_entropy.cli.sim2sim import main

if __name__ == "__main__":
    raise SystemExit(main())
