"""Cut a CSV byte stream into chunks of whole records, fast and without decoding it.

A record ends at a newline outside quotes: where the count of `"` since the record's start is even
(an escaped quote `""` counts twice, so it keeps the parity). Data without any quote takes a fast
path of `bytes.count` and `bytes.find`, which run in C. A blank record holds only spaces, tabs or
`\\r`; it is kept in the chunk (so line numbers stay right) but not counted as a row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from shared.errors import InvalidInput

BOM = b"\xef\xbb\xbf"
BLANK = re.compile(rb"[ \t\r]*")  # fullmatch: a record (without its newline) that is blank
_FIRST_BLANK = re.compile(rb"[ \t\r]*\n")
_NEXT_BLANKS = re.compile(rb"\n[ \t\r]*(?=\n)")  # a record end followed by a blank record

MAX_RECORD_BYTES = 1 << 20
MAX_CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class Chunk:
    """Whole records of the file, ready to be stored and scored on their own."""

    index: int
    first_line: int
    """1-based line of the file on which the chunk's first record starts."""
    rows: int
    """Non-blank records in the chunk."""
    data: bytes


def iter_records(data: bytes, start: int = 0) -> Iterator[tuple[int, int, int, bool]]:
    """(start, end, newlines before it, complete) of each record; `end` excludes the newline."""
    i, quotes, newlines = start, 0, 0
    record, record_line = start, 0
    while True:
        nl = data.find(b"\n", i)
        if nl < 0:
            if record < len(data):
                yield record, len(data), record_line, False
            return
        quotes += data.count(b'"', i, nl)
        i = nl + 1
        newlines += 1
        if quotes % 2 == 0:
            yield record, nl, record_line, True
            record, record_line, quotes = i, newlines, 0


def record_ends(data: bytes, start: int, limit: int) -> tuple[int, int, int]:
    """(end, records, blank records) of at most `limit` complete records from `start`."""
    if limit <= 0:
        return start, 0, 0
    if data.find(b'"', start) < 0:
        newlines = data.count(b"\n", start)
        if newlines <= limit:
            end = data.rfind(b"\n", start) + 1 if newlines else start
        else:
            end = start
            for _ in range(limit):
                end = data.find(b"\n", end) + 1
            newlines = limit
        return end, newlines, count_blank(data, start, end) if newlines else 0
    end, n, blanks = start, 0, 0
    for first, last, _, complete in iter_records(data, start):
        if not complete:
            break
        n += 1
        blanks += BLANK.fullmatch(data, first, last) is not None
        end = last + 1
        if n == limit:
            break
    return end, n, blanks


def count_blank(data: bytes, start: int, end: int) -> int:
    """Blank records in `data[start:end]`, whole unquoted records each ending with a newline."""
    first = 1 if _FIRST_BLANK.match(data, start, end) else 0
    return first + len(_NEXT_BLANKS.findall(data, start, end))


def split_first(data: bytes, final: bool) -> tuple[int, int, int] | None:
    """(line, start, end) of the first non-blank record (`end` past its newline, if it has one);
    None while it is incomplete, or when `final` and there is none."""
    pos, line = 0, 1
    while True:
        end, n, blanks = record_ends(data, pos, 1)
        if n == 0:
            if final and BLANK.fullmatch(data, pos) is None:
                return line, pos, len(data)
            if len(data) - pos > MAX_RECORD_BYTES:
                raise too_long(line)
            return None
        if not blanks:
            return line, pos, end
        line += data.count(b"\n", pos, end)
        pos = end


def too_long(line: int) -> InvalidInput:
    """The error for a record that never ends (a huge line or an unclosed quote)."""
    return InvalidInput(
        f"line {line}: longer than {MAX_RECORD_BYTES} bytes (a missing newline or an unclosed "
        'quote `"`?)',
        line=line,
    )


class Chunker:
    """Feeds on blocks of a stream and hands out chunks of at most `chunk_rows` records."""

    def __init__(self, chunk_rows: int, first_line: int = 1) -> None:
        self.chunk_rows = chunk_rows
        self.rows_total = 0
        self.chunks_total = 0
        self._tail = b""  # the start of an incomplete record
        self._parts: list[bytes] = []
        self._records = self._rows = self._bytes = self._newlines = 0
        self._line = first_line  # where the current chunk starts

    def feed(self, block: bytes) -> list[Chunk]:
        """The chunks completed by `block`."""
        data = self._tail + block if self._tail else block
        pos, done = 0, []
        while True:
            end, n, blanks = record_ends(data, pos, self.chunk_rows - self._records)
            if n:
                self._take(data[pos:end], n, blanks, data.count(b"\n", pos, end))
                pos = end
            if self._records < self.chunk_rows and self._bytes < MAX_CHUNK_BYTES:
                break
            done.extend(self._close())
        self._tail = data[pos:]
        if len(self._tail) > MAX_RECORD_BYTES:
            raise too_long(self._line + self._newlines)
        return done

    def finish(self) -> list[Chunk]:
        """The last chunk; a final record without a newline gets one."""
        tail, self._tail = self._tail, b""
        if tail and BLANK.fullmatch(tail) is None:
            self._take(tail + b"\n", 1, 0, 0)
        return self._close()

    def _take(self, data: bytes, records: int, blanks: int, newlines: int) -> None:
        self._parts.append(data)
        self._records += records
        self._rows += records - blanks
        self._bytes += len(data)
        self._newlines += newlines

    def _close(self) -> list[Chunk]:
        chunk = None
        if self._rows:  # a chunk of blank lines only is not worth a task
            data = b"".join(self._parts)
            chunk = Chunk(self.chunks_total, self._line, self._rows, data)
            self.chunks_total += 1
            self.rows_total += self._rows
        self._line += self._newlines
        self._parts = []
        self._records = self._rows = self._bytes = self._newlines = 0
        return [chunk] if chunk else []
