"""What every Redis user in mlqueue shares: a typed script call, and text or bytes from a reply."""

from __future__ import annotations

from dataclasses import dataclass, field

Arg = str | bytes | int | float


@dataclass(frozen=True)
class ScriptCall:
    """The KEYS and ARGV of one Lua script call, built by the module that owns the script.

    Callers pass it on as `script(keys=call.keys, args=call.args)` and never assemble
    positional ARGV themselves.
    """

    keys: list[str]
    args: list[Arg] = field(default_factory=list)


def text(value: object) -> str:
    """A Redis reply (bytes, str, int or None) as text; None is ""."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def raw(value: bytes | str) -> bytes:
    """A Redis reply as bytes (a client made with `decode_responses` would hand back str)."""
    return value if isinstance(value, bytes) else value.encode()
