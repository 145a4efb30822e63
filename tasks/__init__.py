"""Runnable tasks (`python -m tasks.walk`, `tasks.export`, ...) and the small helpers their command lines share."""

import argparse


def comma_floats(text: str) -> tuple[float, ...]:
    """Argparse type: '0.3,0,0' -> (0.3, 0.0, 0.0)."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
