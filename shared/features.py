"""What a feature value may be: a finite number that float32 can hold.

Tree models compare features as float32, so a larger magnitude becomes infinity inside the model
(scikit-learn's own `predict` refuses it; a hand-rolled path would silently predict). Every path
that takes rows (JSON, CSV, a direct Celery task) checks values with this one function.
"""

from __future__ import annotations

import math
from typing import Final

FLOAT32_MAX = 3.4028235e38
"""Largest magnitude a feature may have (float32's largest finite value, as numpy prints it)."""
EXCERPT_CHARS: Final = 40
"""Characters of a value, cell or header name quoted in a message."""


def value_problem(value: object) -> str | None:
    """Why `value` cannot be a feature, or None. Ints are compared exactly, never converted
    (a 400-digit int overflows float conversion)."""
    # bool is an int subclass, and a string would be silently parsed by numpy: refuse both.
    if type(value) not in (float, int):
        return f"expected a number, got {type(value).__name__}"
    assert isinstance(value, float | int)
    if isinstance(value, float) and not math.isfinite(value):
        return f"non-finite value {value!r}"
    if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
        return f"value {excerpt(value)} is outside the float32 range (|x| <= {FLOAT32_MAX!r})"
    return None


def excerpt(value: object) -> str:
    """`value` as quoted in any message: at most `EXCERPT_CHARS` characters, `…` marking a cut
    (a 130 kB cell is still named by line and column, but never copied whole into an error)."""
    text = str(value)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "\u2026"
