"""Read a YAML config file once, keeping the line of every key so errors can name it.

:func:`load` returns a :class:`YamlFile`: the data (``yaml.safe_load`` semantics: no Python tags),
``where("base.meter")`` → ``"sweep.yaml:4 (base.meter)"``, and the duplicate keys found (YAML
itself silently keeps the last one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e3bench.core.errors import E3Error


@dataclass
class YamlFile:
    """A parsed YAML mapping. ``lines``: dotted key path (list items by index, ``tasks.0``) →
    1-based line; ``duplicates``: ``(path, line, first_line)`` for keys given twice."""

    path: Path
    data: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)

    def line_of(self, key_path: str) -> int | None:
        """Line of ``key_path`` or of its nearest enclosing key that has one."""
        parts = key_path.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line is not None:
                return line
            parts.pop()
        return None

    def where(self, key_path: str) -> str:
        """``"file.yaml:LINE (key.path)"`` for messages."""
        line = self.line_of(key_path)
        return f"{self.path}:{line} ({key_path})" if line else f"{self.path} ({key_path})"


def load(path: str | Path, *, what: str = "config file", hint: str = "check the path given to --config") -> YamlFile:
    """Parse ``path`` (a mapping at the top). ``what``/``hint`` name the file in errors.

    Raises :class:`E3Error` when the file is missing or a directory, is not valid YAML (with the
    line), or is not a mapping. An empty file gives an empty mapping.
    """
    import yaml

    p = Path(path)
    if p.is_dir():
        raise E3Error(f"{what} {p} is a directory", "pass the YAML file itself")
    if not p.is_file():
        raise E3Error(f"{what} not found: {p}", hint)
    try:
        text = p.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise E3Error(f"{what} {p} is not UTF-8 text ({exc.reason})", "save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise E3Error(f"{what} {p} is not valid YAML{where}", "fix the YAML syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise E3Error(f"{what} {p} must be a mapping of key: value", "see README 'Config'")
    out = YamlFile(p, data)
    if node is not None:
        _walk(node, "", out)
    return out


def _walk(node: Any, prefix: str, out: YamlFile) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            path = f"{prefix}{key}"
            line = key_node.start_mark.line + 1
            if key in seen:
                out.duplicates.append((path, line, seen[key]))
            seen[key] = line
            out.lines[path] = line
            _walk(value_node, f"{path}.", out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}{i}"
            out.lines[path] = item.start_mark.line + 1
            _walk(item, f"{path}.", out)
