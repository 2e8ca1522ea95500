"""The model registry on disk: `<root>/<name>/<version>/{model.skops|model.joblib,manifest.json}`.

Versions are positive integers; a name alone means its newest version, "name:version" one version,
"name@alias" the version an alias points at (`shared.aliases`), and "default" the settings' default
model: its `production` alias when it has one, else its newest version. Reading manifests needs no
ML library, so the gateway uses this module too.

A manifest is trusted for its metadata only: the artifact is a bare file name inside the version's
own folder, the manifest's name and version must be the folders', and the artifact is read once
into memory, hashed, and loaded from those same bytes (nothing can swap the file in between).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from pydantic import ValidationError

from shared.aliases import PRODUCTION, AliasTarget, is_alias
from shared.errors import ModelError, ModelNotFound
from shared.schemas import ModelInfo

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
SKOPS_SUFFIX = ".skops"
ZIP_MAGIC = b"PK\x03\x04"  # a skops file is a zip archive; a pickle never starts so
# A leading dot is refused: ".." would leave the registry, and dot-folders are hidden by intent.
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


class AliasLookup(Protocol):
    """Where aliases point (`shared.aliases.AliasBook` and its readers)."""

    def lookup(self, name: str, alias: str) -> AliasTarget | None:
        """The target of `name@alias`, or None."""
        ...

    def of(self, name: str) -> dict[str, AliasTarget]:
        """Every alias of model `name`."""
        ...


@dataclass(frozen=True)
class Pinned:
    """What a spec resolved to for one job: the version that answers, and the shadow version
    that scores a copy of its rows (when its alias has one)."""

    info: ModelInfo
    shadow: ModelInfo | None = None

    @property
    def spec(self) -> str:
        """The pinned "name:version"."""
        return f"{self.info.name}:{self.info.version}"


class Registry:
    """Lists, resolves and verifies model versions under one root directory."""

    def __init__(
        self,
        root: Path,
        default: str,
        cache_seconds: float = 0.0,
        aliases: AliasLookup | None = None,
    ) -> None:
        self.root = root
        self.default = default
        self.aliases = aliases
        # Serving processes resolve on every job: re-reading the folder once a second is plenty
        # to notice a newly trained version.
        self.cache_seconds = cache_seconds
        self._resolved: dict[str, tuple[float, ModelInfo]] = {}

    def names(self) -> list[str]:
        """Model names that have at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if _NAME.match(p.name) and self._versions(p.name)
        )

    def all_versions(self) -> list[ModelInfo]:
        """Every usable version of every model, newest version first within each name (a
        version whose manifest is refused is left out and logged, not an error for the list)."""
        found = []
        for name in self.names():
            for v in reversed(self._versions(name)):
                try:
                    found.append(self._manifest(name, str(v)))
                except ModelError as exc:
                    log.warning("model version skipped: %s", exc.message)
        return found

    def resolve(self, spec: str, key: str = "") -> ModelInfo:
        """The manifest that `spec` ("default", "name", "name:version" or "name@alias") stands
        for; `key` (a job id) picks the version of an alias that splits traffic."""
        return self.pin(spec, key).info

    def pin(self, spec: str, key: str = "") -> Pinned:
        """The version (and shadow version) that `spec` stands for, for the job with id `key`."""
        name, at, alias = spec.partition("@")
        target: AliasTarget | None
        if at:
            name = self.default if name == "default" else name
            target = self._alias(spec, name, alias)
        elif spec == "default" and self.aliases is not None:
            name = self.default
            target = self.aliases.lookup(name, PRODUCTION)
        else:
            return Pinned(self._cached(spec))
        if target is None:  # "default" without a production alias: the newest version
            return Pinned(self._cached(name))
        version = target.choose(key)
        try:
            info = self._cached(f"{name}:{version}")
        except ModelNotFound:
            raise ModelNotFound(
                f"model {spec!r}: its alias points at version {version}, which is not in the "
                "registry",
                model=spec,
            ) from None
        shadow = None
        if target.shadow is not None:
            try:
                shadow = self._cached(f"{name}:{target.shadow}")
            except (ModelNotFound, ModelError) as exc:  # a shadow never fails the job
                log.warning("shadow version skipped: %s", exc.message)
        return Pinned(info, shadow)

    def _alias(self, spec: str, name: str, alias: str) -> AliasTarget:
        if not is_alias(alias):
            raise ModelNotFound(
                f"invalid alias in {spec!r}: an alias is [a-z0-9-]+ (at most 63)", model=spec
            )
        target = self.aliases.lookup(name, alias) if self.aliases is not None else None
        if target is None:
            known = ", ".join(self.aliases.of(name)) if self.aliases is not None else ""
            raise ModelNotFound(
                f"model {name!r} has no alias {alias!r} (its aliases: {known or 'none'})",
                model=spec,
                alias=alias,
            )
        return target

    def _cached(self, spec: str) -> ModelInfo:
        now = time.monotonic()
        cached = self._resolved.get(spec)
        if cached and now - cached[0] < self.cache_seconds:
            return cached[1]
        info = self._resolve(spec)
        if self.cache_seconds:
            self._resolved[spec] = (now, info)
        return info

    def forget(self) -> None:
        """Drop the resolved cache: the next `resolve` reads the folder (after an upload)."""
        self._resolved.clear()

    def _resolve(self, spec: str) -> ModelInfo:
        name, _, version = spec.partition(":")
        name = self.default if name == "default" else name
        if not _NAME.match(name) or (version and not version.isdigit()):
            raise ModelNotFound(f"invalid model name {spec!r}", model=spec)
        versions = self._versions(name)
        if not versions or (version and int(version) not in versions):
            known = ", ".join(self.names()) or "none"
            raise ModelNotFound(f"unknown model {spec!r} (available: {known})", model=spec)
        return self._manifest(name, str(int(version) if version else versions[-1]))

    def read_artifact(self, info: ModelInfo) -> bytes:
        """The bytes of a version's artifact, verified: their sha256 must match the manifest.
        Load the model from these very bytes, never by reopening the file."""
        path = self.root / info.name / info.version / info.artifact
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"model {info.name}:{info.version}: cannot read {path.name}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if info.artifact.endswith(SKOPS_SUFFIX) and not data.startswith(ZIP_MAGIC):
            # Loaders pick skops or pickle by content: a file named as skops must be one.
            raise ModelError(
                f"model {info.name}:{info.version}: {info.artifact} is not a skops file "
                "(not a zip archive); refusing to load it"
            )
        if digest != info.sha256:
            raise ModelError(
                f"model {info.name}:{info.version}: artifact sha256 {digest[:12]}... does not "
                f"match the manifest's {info.sha256[:12]}...; refusing to load it"
            )
        return data

    def versions(self, name: str) -> list[str]:
        """The versions of `name` that have a manifest, oldest first."""
        return [str(v) for v in self._versions(name)] if _NAME.match(name) else []

    def next_version(self, name: str) -> str:
        """The version number a newly trained model of `name` gets."""
        versions = self._versions(name)
        return str(versions[-1] + 1 if versions else 1)

    def _versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file()
        )

    def _manifest(self, name: str, version: str) -> ModelInfo:
        path = self.root / name / version / MANIFEST
        try:
            info = ModelInfo.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise ModelError(f"model {name}:{version}: unreadable manifest") from exc
        if (info.name, info.version) != (name, version):
            raise ModelError(
                f"model {name}:{version}: its manifest says {info.name!r} version "
                f"{info.version!r}; name and version must be the folders'"
            )
        if not _is_bare_file_name(info.artifact):
            raise ModelError(
                f"model {name}:{version}: the manifest's artifact must be a file name in the "
                "version's folder (no path, no leading dot)"
            )
        return info


def is_valid_name(name: str) -> bool:
    """Whether `name` may be a model's name (a folder of the registry)."""
    return bool(_NAME.match(name)) and name != "default"


def _is_bare_file_name(name: str) -> bool:
    return (
        bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and PurePosixPath(name).name == name
    )


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
