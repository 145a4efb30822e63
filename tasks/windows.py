"""Real logs as DANN windows: `python -m tasks.windows` runs `ksim_entropy.cli.windows` (installed: `ksim-windows`)."""

from ksim_entropy.cli.windows import main

if __name__ == "__main__":
    main()
