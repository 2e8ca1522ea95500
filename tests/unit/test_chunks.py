"""The CSV chunker: whole records per chunk, quotes, CRLF, blanks, line numbers, any block size."""

from __future__ import annotations

import pytest

from shared.chunks import Chunk, Chunker, iter_records, record_ends, split_first
from shared.errors import InvalidInput


def cut(data: bytes, rows: int, block: int, first_line: int = 1) -> list[Chunk]:
    chunker = Chunker(rows, first_line)
    chunks = [c for i in range(0, len(data), block) for c in chunker.feed(data[i : i + block])]
    return chunks + chunker.finish()


BLOCKS = [1, 2, 3, 7, 64, 10_000]


@pytest.mark.parametrize("block", BLOCKS)
def test_chunks_hold_whole_lines_and_number_them(block: int) -> None:
    data = b"".join(b"%d,%d\n" % (i, i * 2) for i in range(10))
    chunks = cut(data, 4, block)
    assert [c.data for c in chunks] == [
        data[: data.index(b"4,8")],
        data[data.index(b"4,8") : data.index(b"8,16")],
        data[data.index(b"8,16") :],
    ]
    assert [(c.index, c.first_line, c.rows) for c in chunks] == [(0, 1, 4), (1, 5, 4), (2, 9, 2)]


@pytest.mark.parametrize("block", BLOCKS)
def test_a_newline_inside_quotes_does_not_end_a_record(block: int) -> None:
    data = b'1,"a\nb"\n2,"c ""q"" \r\nd"\r\n3,x\r\n4,"e"\n'
    chunks = cut(data, 2, block)
    assert [c.data for c in chunks] == [b'1,"a\nb"\n2,"c ""q"" \r\nd"\r\n', b'3,x\r\n4,"e"\n']
    # Lines count the file's newlines, quoted or not: the second chunk starts on line 5.
    assert [(c.first_line, c.rows) for c in chunks] == [(1, 2), (5, 2)]


@pytest.mark.parametrize("block", BLOCKS)
def test_blank_lines_are_kept_but_not_counted_and_a_final_newline_is_added(block: int) -> None:
    data = b"1,2\n\n  \r\n3,4\n5,6\n\t\n\n7,8"
    chunks = cut(data, 3, block)  # at most 3 lines per chunk, blank or not
    assert [c.data for c in chunks] == [b"1,2\n\n  \r\n", b"3,4\n5,6\n\t\n", b"\n7,8\n"]
    assert [(c.first_line, c.rows) for c in chunks] == [(1, 1), (4, 2), (7, 1)]


def test_trailing_blank_lines_make_no_chunk() -> None:
    chunks = cut(b"1,2\n3,4\n\n\n  ", 2, 3)
    assert [(c.rows, c.data) for c in chunks] == [(2, b"1,2\n3,4\n")]


def test_first_line_offsets_chunks_after_a_header() -> None:
    assert [c.first_line for c in cut(b"1\n2\n3\n", 2, 5, first_line=2)] == [2, 4]


def test_record_ends_counts_blank_records_in_both_paths() -> None:
    assert record_ends(b"1\n\n2\n \n3", 0, 10) == (7, 4, 2)
    assert record_ends(b'"1"\n\n"2\n"\n \n3', 0, 10) == (12, 4, 2)
    assert record_ends(b"1\n2\n3\n", 2, 1) == (4, 1, 0)


def test_iter_records_gives_offsets_and_line_numbers() -> None:
    data = b'a\n"b\nc"\nd'
    assert list(iter_records(data)) == [(0, 1, 0, True), (2, 7, 1, True), (8, 9, 3, False)]


def test_split_first_skips_blank_lines_and_waits_for_a_whole_record() -> None:
    assert split_first(b"\n \nage,sex", final=False) is None
    assert split_first(b"\n \nage,sex", final=True) == (3, 3, 10)
    assert split_first(b"\r\nage,sex\r\n1,2", final=False) == (2, 2, 11)
    assert split_first(b"\n\n", final=True) is None


def test_a_line_that_never_ends_is_refused() -> None:
    chunker = Chunker(10)
    chunker.feed(b"1,2\n")
    with pytest.raises(InvalidInput, match="line 2: longer than"):
        for _ in range(20):
            chunker.feed(b'"' + b"x" * 100_000)
