"""mkdocs hook: the settings reference, generated from `shared/settings.py` at every build.

`docs/settings.md` holds the marker below; this hook replaces it with one entry per field of
`Settings`: its `MLQUEUE_*` name, type, default, bounds and description. Names, defaults and
bounds come from the imported class (what the code really does); the description is the field's
`Field(description=...)` or, as settings.py writes them, the docstring under the field, and the
`# --- Section ---` comments group the fields; both are read with `ast` because Python drops them.
Importing settings.py needs only pydantic and pydantic-settings: no Redis, no model. A field
without a description logs a warning, which `mkdocs build --strict` turns into a failed build.
"""

from __future__ import annotations

import ast
import inspect
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "shared" / "settings.py"
MARKER = "<!-- settings-reference -->"
SECTION = re.compile(r"^\s*# -+ (?P<title>.+?) -+\s*$")

log = logging.getLogger(f"mkdocs.plugins.{__name__}")


@dataclass(frozen=True)
class FieldSource:
    """What only the source holds: the type as written, the default expression, the docstring."""

    section: str
    annotation: str
    default: str | None
    docstring: str


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the marker, wherever it appears, with the generated reference."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown


def on_serve(server: Any, **_: Any) -> Any:
    """`mkdocs serve` rebuilds when settings.py changes, not only when docs/ does."""
    server.watch(str(SOURCE))
    return server


def render() -> str:
    """The reference as Markdown: a heading per section, an entry per field, in source order."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from shared.settings import Settings  # imported late: ROOT is on sys.path only now

    sources = read_sources(SOURCE.read_text())
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    missing = set(Settings.model_fields) - set(sources)
    if missing:
        log.warning("settings reference: fields not found in %s: %s", SOURCE, sorted(missing))
    lines: list[str] = []
    section = None
    for name, src in sources.items():
        field = Settings.model_fields.get(name)
        if field is None:
            continue
        if src.section != section:
            section = src.section
            lines += [f"## {section}", ""]
        description = env_names(field.description or src.docstring, Settings.model_fields, prefix)
        if not description:
            log.warning("settings reference: %s has no description in %s", name, SOURCE.name)
        lines += [
            f"### `{prefix}{name.upper()}`",
            "",
            " · ".join(facts(field, src)),
            "",
            description or "*(undocumented)*",
            "",
        ]
    return "\n".join(lines)


def facts(field: Any, src: FieldSource) -> list[str]:
    """Type, default and bounds of one field, as short Markdown phrases."""
    found = [f"type `{src.annotation}`", f"default {default_text(field, src)}"]
    bounds = [bound_text(m) for m in field.metadata]
    found += [b for b in bounds if b]
    return found


def default_text(field: Any, src: FieldSource) -> str:
    """The default as a user would write it in the environment."""
    if field.default_factory is not None:
        # Computed where the process starts (e.g. from the CPU count): show the expression.
        return f"`{src.default}` (computed at start)" if src.default else "computed at start"
    value = field.default
    if value is None:
        return "unset"
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, bool):
        shown = str(value).lower()
    elif isinstance(value, list | tuple) and not value:
        return "empty"
    else:
        shown = str(value)
    literal = src.default is not None and src.default.strip("\"'").lower() == shown.lower()
    return f"`{shown}`" if literal or src.default is None else f"`{shown}` (`{src.default}`)"


def env_names(text: str, fields: Mapping[str, Any], prefix: str) -> str:
    """`task_time_limit` in a docstring becomes `MLQUEUE_TASK_TIME_LIMIT`: what readers set."""
    return re.sub(
        r"`(\w+)`",
        lambda m: f"`{prefix}{m[1].upper()}`" if m[1] in fields else m[0],
        text,
    )


def bound_text(meta: Any) -> str | None:
    """`≥ 1`, `≤ 65535`: the annotated-types bounds that pydantic enforces."""
    for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        value = getattr(meta, attr, None)
        if value is not None:
            return f"{sign} {value}"
    return None


def read_sources(text: str) -> dict[str, FieldSource]:
    """Each annotated field of `class Settings`, with its section, annotation, default, doc."""
    tree = ast.parse(text)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    sections = [
        (number, m["title"])
        for number, line in enumerate(text.splitlines(), start=1)
        if (m := SECTION.match(line))
    ]
    found: dict[str, FieldSource] = {}
    for stmt, after in zip(cls.body, [*cls.body[1:], None], strict=True):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if stmt.target.id == "model_config":
            continue
        found[stmt.target.id] = FieldSource(
            section=next((t for n, t in reversed(sections) if n < stmt.lineno), "General"),
            annotation=annotation_text(stmt.annotation),
            default=default_source(stmt.value),
            docstring=docstring(after),
        )
    return found


def annotation_text(node: ast.expr) -> str:
    """The type as written, without `Annotated[...]` metadata."""
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "Annotated"
        and isinstance(node.slice, ast.Tuple)
    ):
        node = node.slice.elts[0]
    return ast.unparse(node)


def default_source(value: ast.expr | None) -> str | None:
    """The default expression: `Field(...)`'s first argument or `default=`, a factory's lambda
    body, or the plain value."""
    if value is None:
        return None
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "Field":
        keywords = {k.arg: k.value for k in value.keywords}
        factory = keywords.get("default_factory")
        if isinstance(factory, ast.Lambda):
            return ast.unparse(factory.body)
        chosen = value.args[0] if value.args else keywords.get("default")
        return ast.unparse(chosen) if chosen is not None else None
    if isinstance(value, ast.Call) and value.args:  # SecretStr("..."), Path("...")
        return ast.unparse(value.args[0])
    return ast.unparse(value)


def docstring(node: ast.stmt | None) -> str:
    """The string literal right under a field (an attribute docstring), dedented."""
    if (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ):
        return inspect.cleandoc(node.value.value)
    return ""
