"""Run a policy over KOS: `python -m tasks.deploy` runs `ksim_entropy.cli.deploy` (installed: `ksim-deploy`)."""

from ksim_entropy.cli.deploy import main

if __name__ == "__main__":
    raise SystemExit(main())
