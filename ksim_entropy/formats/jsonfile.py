"""Strict JSON files for the shared formats: atomic writes that never replace a file unasked, strict reads.

Pure standard library. Readers raise `JsonFileError` with a one-line reason; the format modules prefix it with
the path and re-raise their own error type.
"""

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["JsonFileError", "atomic_write", "read_json", "write_json"]


class JsonFileError(ValueError):
    """A file that is missing, unreadable, not UTF-8, not JSON, or has a duplicate key in an object."""


class _DuplicateKeyError(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKeyError(next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i])))
    return out


def read_json(path: Path) -> object:
    """The JSON value in `path`; `JsonFileError` saying why it cannot be read (duplicate keys are an error)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise JsonFileError("no such file") from None
    except IsADirectoryError:
        raise JsonFileError("is a directory, not a file") from None
    except UnicodeDecodeError as err:
        raise JsonFileError(f"not UTF-8 text ({err})") from None
    except OSError as err:
        raise JsonFileError(f"cannot be read ({err.strerror or err})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise JsonFileError(f"not valid JSON ({err})") from None
    except RecursionError:
        raise JsonFileError("not valid JSON (nested too deeply)") from None
    except _DuplicateKeyError as err:
        raise JsonFileError(f"duplicate key {err.args[0]!r} in a JSON object") from None


def write_json(data: object, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write `data` as indented strict JSON, atomically (temp file + fsync + rename); returns the path.

    Refuses an existing file (`FileExistsError`, the file untouched) unless `overwrite`; creates parent folders.
    NaN and infinities are refused (`ValueError`) before anything is written.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a new temporary sibling of `path`, flush it to disk, then rename it to `path`.

    Readers see the old file or the whole new one, never a part; the temporary file is removed on any failure.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        with tmp.open("rb+") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
