"""Fit the randomization to real logs: `python -m tasks.fit` runs `ksim_entropy.cli.fit` (installed: `ksim-fit`)."""

from ksim_entropy.cli.fit import main

if __name__ == "__main__":
    raise SystemExit(main())
