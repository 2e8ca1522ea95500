"""The settings page of the docs site is generated from `shared/settings.py` and matches it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def load_hook() -> ModuleType:
    """docs/hooks/settings_ref.py is a file mkdocs loads by path, not a package module."""
    spec = importlib.util.spec_from_file_location(
        "settings_ref", ROOT / "docs" / "hooks" / "settings_ref.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def entries(markdown: str) -> dict[str, str]:
    """`### `MLQUEUE_X`` heading -> the text of its entry."""
    parts = re.split(r"^### `(MLQUEUE_\w+)`\n", markdown, flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_field_has_an_entry_with_its_description() -> None:
    found = entries(load_hook().render())
    assert list(found) == [f"MLQUEUE_{name.upper()}" for name in Settings.model_fields]
    for body in found.values():
        facts, _, description = body.strip().partition("\n\n")
        assert facts.startswith("type `")
        assert description.strip() and "(undocumented)" not in description


def test_defaults_are_the_code_s_defaults() -> None:
    found = entries(load_hook().render())
    assert "default `25000`" in found["MLQUEUE_CSV_CHUNK_ROWS"]
    assert "default `redis://127.0.0.1:6379/0`" in found["MLQUEUE_REDIS_URL"]
    assert "default `true`" in found["MLQUEUE_FAST_PREDICT"]
    assert "default unset" in found["MLQUEUE_METRICS_DIR"]
    assert "default empty" in found["MLQUEUE_API_KEYS"]
    assert "computed at start" in found["MLQUEUE_WORKER_CONCURRENCY"]
    assert "≥ 1 · ≤ 65535" in found["MLQUEUE_PORT"]
    for name, field in Settings.model_fields.items():
        if isinstance(field.default, int) and not isinstance(field.default, bool):
            assert f"default `{field.default}`" in found[f"MLQUEUE_{name.upper()}"]


def test_sections_descriptions_and_field_names_come_from_the_source() -> None:
    hook = load_hook()
    source = '''
class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLQUEUE_")

    # --- Alpha ---------------------------------------------------------------
    one: int = Field(3, ge=1)
    """Used with `two`."""
    # --- Beta ----------------------------------------------------------------
    two: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["x"])
    three: str = Field("a", description="Given inline.")
'''
    fields = hook.read_sources(source)
    assert [(n, f.section, f.annotation, f.default) for n, f in fields.items()] == [
        ("one", "Alpha", "int", "3"),
        ("two", "Beta", "list[str]", "['x']"),
        ("three", "Beta", "str", "'a'"),
    ]
    assert fields["one"].docstring == "Used with `two`."
    assert fields["two"].docstring == ""
    assert hook.env_names("Used with `two`, not `nope`.", fields, "MLQUEUE_") == (
        "Used with `MLQUEUE_TWO`, not `nope`."
    )
