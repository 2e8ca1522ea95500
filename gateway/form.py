"""A multipart form read as a stream of typed events: small fields first, then one file.

`gateway.multipart` turns bytes into parts; this turns parts into what an upload acts on. Fields
must come before the file, so that they are known before its first byte is read.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from gateway.multipart import Multipart, boundary_of
from shared.errors import InvalidInput

MAX_FIELD_BYTES = 1024


@dataclass(frozen=True)
class FileStart:
    """The file part began; `fields` holds the known fields sent before it (stripped text)."""

    fields: dict[str, str]


@dataclass(frozen=True)
class FileData:
    """The next bytes of the file."""

    data: bytes


@dataclass(frozen=True)
class FileEnd:
    """The file part ended."""


FormEvent = FileStart | FileData | FileEnd


class FormReader:
    """Reads a `multipart/form-data` body block by block: fields, then the part `file_field`."""

    def __init__(self, content_type: str, file_field: str, fields: Collection[str]) -> None:
        self._multipart = Multipart(boundary_of(content_type))
        self.file_field = file_field
        self.known = fields
        self.fields: dict[str, str] = {}
        self._state = "fields"  # fields, file, done
        self._name: str | None = None
        self._value = b""

    def feed(self, block: bytes) -> list[FormEvent]:
        """The events that `block` completes."""
        events: list[FormEvent] = []
        for kind, value in self._multipart.feed(block):
            event = self._on(kind, value)
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> None:
        """The body ended: it must have held the whole file."""
        self._multipart.finalize()
        if self._state != "done":
            raise InvalidInput(
                f"no complete file in the form: upload the CSV as field `{self.file_field}`"
            )

    def _on(self, kind: str, value: Any) -> FormEvent | None:
        if kind == "part":
            return self._part(value)
        if kind == "data":
            return self._data(value)
        if self._state == "file":  # "end" of the file part
            self._state = "done"
            return FileEnd()
        if self._name is not None and self._name in self.known:
            self.fields[self._name] = self._value.decode("utf-8", "replace").strip()
        return None

    def _part(self, name: str) -> FormEvent | None:
        if name == self.file_field and self._state == "fields":
            self._state = "file"
            return FileStart(dict(self.fields))
        if self._state != "fields":
            raise InvalidInput(f"form field {name!r} must come before the file")
        self._name, self._value = name, b""
        return None

    def _data(self, data: bytes) -> FormEvent | None:
        if self._state == "file":
            return FileData(data)
        if self._name is not None:
            self._value += data
            if len(self._value) > MAX_FIELD_BYTES:
                raise InvalidInput(f"form field {self._name!r} is too long")
        return None
