"""Train the K-Bot: `python -m tasks.walk` runs `ksim_entropy.cli.walk` (installed: `ksim-walk`)."""

from ksim_entropy.cli.walk import main

if __name__ == "__main__":
    main()
