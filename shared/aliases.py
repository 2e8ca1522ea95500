"""Model aliases (`demo@production`): what one points at, and how it is stored in Redis.

An alias points at one version (`{"version": 3}`), or splits traffic between versions by weight
(`{"versions": {"3": 0.9, "4": 0.1}}`: a canary), and may name a shadow version that scores a
copy of the rows after the answer (`{"version": 3, "shadow": 4}`). The version a job gets is
chosen from its job id, so a job keeps its version when it is retried or redelivered.

Every alias of every model lives in one hash (`TARGETS`, field `name@alias`), beside a per-model
history list and an epoch counter; `set_alias` changes all three in one Lua script, so no reader
sees an alias without its history entry. Each process keeps a copy of the hash and re-reads it
when the epoch moves (`AliasBook`): one GET per process per `POLL_SECONDS`, and a change reaches
every gateway and worker within that.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from typing_extensions import TypedDict

from shared.errors import QueueUnavailable
from shared.redisio import ScriptCall, text

if TYPE_CHECKING:
    from redis import Redis

ALIAS_PATTERN = r"^[a-z0-9-]+$"
_ALIAS = re.compile(ALIAS_PATTERN)
PRODUCTION = "production"  # the alias that "default" goes through when the default model has it
TARGETS = "mlqueue:aliases"
EPOCH = "mlqueue:aliases:epoch"
HISTORY_KEEP = 1000  # changes kept per model
POLL_SECONDS = 0.2  # how stale a process's copy of the aliases may get

AliasName = Annotated[str, Field(min_length=1, max_length=63, pattern=ALIAS_PATTERN)]
Version = Annotated[int, Field(ge=1)]


def history_key(name: str) -> str:
    """The list of alias changes of model `name`, newest first."""
    return f"mlqueue:aliases:history:{name}"


def is_alias(alias: str) -> bool:
    """Whether `alias` is a valid alias name (`[a-z0-9-]+`, at most 63 characters)."""
    return len(alias) <= 63 and bool(_ALIAS.match(alias))


class TargetDict(TypedDict, total=False):
    """An `AliasTarget` as sent: only the keys that are set (its answer schema)."""

    version: int
    versions: dict[str, float]
    shadow: int


class AliasTarget(BaseModel):
    """Where an alias points: one `version`, or weighted `versions` (a canary); optionally a
    `shadow` version that scores a copy of each job's rows after its answer is stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Version | None = Field(None, description="The one version the alias names.")
    versions: dict[str, float] | None = Field(
        None,
        description='Traffic split by weight, e.g. {"3": 0.9, "4": 0.1}; weights need not '
        "add up to 1 (each job picks a version from its job id, in proportion to the weights).",
    )
    shadow: Version | None = Field(
        None, description="A version that also scores each job's rows, after the answer."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.version is None) == (self.versions is None):
            raise ValueError('give either "version" or "versions", not both or neither')
        if self.versions is not None:
            if not self.versions or len(self.versions) > 16:
                raise ValueError('"versions" needs 1 to 16 versions')
            for key, weight in self.versions.items():
                if not key.isdigit() or int(key) < 1:
                    raise ValueError(f'"versions": {key!r} is not a version number')
                if not 0 < weight <= 1e6:
                    raise ValueError(f'"versions": the weight of {key} must be > 0')
        if self.shadow is not None and self.shadow in self.primaries():
            raise ValueError(f"shadow version {self.shadow} also takes the traffic")
        return self

    @model_serializer(mode="wrap")
    def _without_nones(self, handler: SerializerFunctionWrapHandler) -> TargetDict:
        # A target reads as what was PUT: `{"version": 3}`, not three keys, two of them null.
        found: TargetDict = {k: v for k, v in handler(self).items() if v is not None}  # type: ignore[assignment]
        return found

    def primaries(self) -> list[int]:
        """The versions that answer jobs, in ascending order."""
        if self.version is not None:
            return [self.version]
        return sorted(int(v) for v in self.versions or {})

    def choose(self, key: str) -> int:
        """The version for the job with id `key`: fixed per key, in proportion to the weights."""
        if self.version is not None:
            return self.version
        weights = {int(v): w for v, w in (self.versions or {}).items()}
        # The first 8 bytes of sha256(key) as a point in [0, 1): uniform and stable everywhere.
        point = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
        total = sum(weights.values())
        edge = 0.0
        for version in sorted(weights):
            edge += weights[version] / total
            if point < edge:
                return version
        return max(weights)  # rounding left the point past the last edge

    def stored(self) -> bytes:
        """The stored form."""
        return orjson.dumps(self.model_dump(mode="json"))


class AliasChange(BaseModel):
    """One change of an alias: who (an API key's id; "" when keys are off), when, from, to."""

    alias: str
    who: str
    at: datetime
    from_: AliasTarget | None = Field(None, alias="from")
    to: AliasTarget | None = None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class AliasesView(BaseModel):
    """A model's aliases, by alias name."""

    name: str
    aliases: dict[str, AliasTarget]


class HistoryView(BaseModel):
    """A model's alias changes, newest first."""

    name: str
    changes: list[AliasChange]


# KEYS: targets, epoch, history. ARGV: field, new target JSON ("" deletes), who, at, keep.
# Returns the previous target JSON ("" when there was none).
SET_ALIAS = """
local old = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local new = ARGV[2]
if new == '' then
  if old == '' then return '' end
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], new)
end
local alias = string.sub(ARGV[1], string.find(ARGV[1], '@', 1, true) + 1)
local function js(v) if v == '' then return 'null' end return v end
local entry = '{"alias":' .. cjson.encode(alias) .. ',"who":' .. cjson.encode(ARGV[3]) ..
  ',"at":' .. cjson.encode(ARGV[4]) .. ',"from":' .. js(old) .. ',"to":' .. js(new) .. '}'
redis.call('LPUSH', KEYS[3], entry)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
redis.call('INCR', KEYS[2])
return old
"""


def set_alias(name: str, alias: str, target: AliasTarget | None, who: str, at: str) -> ScriptCall:
    """Point `name@alias` at `target` (None: delete it), with its history entry, atomically."""
    return ScriptCall(
        [TARGETS, EPOCH, history_key(name)],
        [f"{name}@{alias}", target.stored() if target else b"", who, at, HISTORY_KEEP],
    )


def parse_targets(raw: Mapping[bytes | str, bytes | str]) -> dict[tuple[str, str], AliasTarget]:
    """The stored hash as `(name, alias) -> target`; an unreadable entry is left out."""
    found = {}
    for field, value in raw.items():
        name, _, alias = text(field).partition("@")
        try:
            found[(name, alias)] = AliasTarget.model_validate_json(value)
        except ValidationError:
            continue  # written by hand: the model then has no such alias, which the 404 says
    return found


def parse_history(entries: list[bytes | str]) -> list[AliasChange]:
    """The stored history list (newest first)."""
    return [AliasChange.model_validate_json(e) for e in entries]


class AliasBook:
    """A process's copy of every alias, refreshed when the epoch moves; fed by a reader that
    knows how to talk to Redis (sync in the worker, async in the gateway)."""

    def __init__(self) -> None:
        self.targets: dict[tuple[str, str], AliasTarget] = {}
        self.epoch: str | None = None  # None: never loaded
        self.checked = float("-inf")

    def due(self, now: float | None = None) -> bool:
        """Whether the epoch should be read again."""
        return (time.monotonic() if now is None else now) - self.checked >= POLL_SECONDS

    def load(self, epoch: str, raw: Mapping[bytes | str, bytes | str]) -> None:
        """Replace the copy with the hash read at `epoch`."""
        self.targets = parse_targets(raw)
        self.epoch = epoch
        self.checked = time.monotonic()

    def seen(self) -> None:
        """The epoch was read again and has not moved."""
        self.checked = time.monotonic()

    def lookup(self, name: str, alias: str) -> AliasTarget | None:
        """Where `name@alias` points, or None (`QueueUnavailable` before the first load)."""
        self.refresh()
        if self.epoch is None:
            raise QueueUnavailable("model aliases are not loaded yet (is Redis up?)")
        return self.targets.get((name, alias))

    def refresh(self) -> None:
        """Bring the copy up to date if due; the gateway's copy is refreshed by its own task."""

    def of(self, name: str) -> dict[str, AliasTarget]:
        """Every alias of model `name`."""
        return {a: t for (n, a), t in sorted(self.targets.items()) if n == name}


class SyncAliasBook(AliasBook):
    """The worker's copy: it reads the epoch itself, at most every `POLL_SECONDS`, when a spec
    names an alias (a job pinned by the gateway to "name:version" never asks)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__()
        self.redis = redis

    def refresh(self) -> None:
        """Re-read the epoch when due, and the aliases when it moved."""
        if not self.due():
            return
        epoch = text(self.redis.get(EPOCH))
        if epoch == self.epoch:
            self.seen()
            return
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(EPOCH)
            pipe.hgetall(TARGETS)
            epoch_now, raw = pipe.execute()
        self.load(text(epoch_now), raw)
