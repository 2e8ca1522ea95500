"""The contract of a model upload between the gateway and the worker that vets it.

The gateway streams the file into Redis (`data_key`, with a TTL) and sends `mlqueue.models.verify`
(`shared.tasks.VerifyModelKwargs`): only JSON crosses the broker. A worker takes the bytes with
GETDEL (a redelivered message finds none and does nothing: an upload is installed at most once),
vets them, smoke-tests a prediction, renames the new version into the registry, and writes the
outcome (`outcome_key`) for the gateway, which polls it.
"""

from __future__ import annotations

from typing import Final, Literal, TypedDict

from shared.jobstore import PREFIX
from shared.registry import ZIP_MAGIC

FORMATS: Final = ("skops", "pickle")
Format = Literal["skops", "pickle"]
OUTCOME_TTL: Final = 600  # seconds: enough for a gateway that polls for `sync_timeout`
# What joblib/pickle files start with: a pickle protocol opcode, or joblib's compressors
# (zlib, gzip, bz2, xz, lzma, lz4).
PICKLE_MAGIC: Final = (
    b"\x80",  # a pickle protocol >= 2 opcode
    b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda",  # zlib
    b"\x1f\x8b",  # gzip
    b"BZh",  # bz2
    b"\xfd7zXZ\x00",  # xz
    b"\x5d\x00\x00",  # lzma
    b"\x04\x22M\x18",  # lz4
)  # fmt: skip


class UploadError(TypedDict):
    """Why an upload was refused: the error class name and its message."""

    type: str
    message: str


class Outcome(TypedDict, total=False):
    """What the worker answers: the new version's manifest (JSON) or an error."""

    manifest: dict[str, object]
    error: UploadError


def data_key(upload_id: str) -> str:
    """Where the uploaded bytes wait for a worker."""
    return f"{PREFIX}:upload:{upload_id}:data"


def outcome_key(upload_id: str) -> str:
    """Where the worker leaves the outcome."""
    return f"{PREFIX}:upload:{upload_id}:outcome"


def sniff(head: bytes) -> Format | None:
    """The format the first bytes of a file show: skops, pickle (joblib's too), or neither."""
    if head.startswith(ZIP_MAGIC):
        return "skops"
    if head.startswith(PICKLE_MAGIC):
        return "pickle"
    return None
