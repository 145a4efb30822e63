"""Watch a checkpoint: `python -m tasks.view` runs `ksim_entropy.cli.view` (installed: `ksim-view`)."""

from ksim_entropy.cli.view import main

if __name__ == "__main__":
    main()
