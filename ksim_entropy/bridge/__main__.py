"""`python -m ksim_entropy.bridge`: see `ksim_entropy.bridge.cli`."""

from ksim_entropy.bridge.cli import main

raise SystemExit(main())
