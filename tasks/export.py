"""Export to .kinfer: `python -m tasks.export` runs `ksim_entropy.cli.export` (installed: `ksim-export`)."""

from ksim_entropy.cli.export import main

if __name__ == "__main__":
    main()
