"""How every benchmark hands back its result: indented JSON on stdout and, given `--out`, the same JSON in a file."""

import json
from pathlib import Path

from ksim_entropy.formats.jsonfile import write_json


def emit_json(result: dict, out: Path | None) -> None:
    """Print `result` as JSON; also write it to `out` (parents created, an existing file replaced: `--out` asks)."""
    print(json.dumps(result, indent=2))
    if out is not None:
        write_json(result, out, overwrite=True)
