"""A config key and its rules in one place: its dataclass field.

``key(default, ...)`` is ``dataclasses.field`` with the key's help and rules as metadata:

- ``help``: what the key does, in a line (every key has one; ``--help-config`` prints it);
- ``check``: ``(predicate, "what it must be")``, refused at load when false;
- ``only``: why hubertkit implements a fairseq key at its default value only (any other
  value is refused rather than trained as if it were not there);
- ``no_effect``: why a fairseq key changes nothing here (it loads, and a value other than
  the default is named in one warning);
- ``departs``: why the default is not fairseq's code default.

``rules`` collects one kind of rule by dotted key (``model.mask_prob``) for the loader,
and ``describe`` prints every key for ``hubertkit train --help-config``.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import MISSING, field
from typing import Any, Callable

# how --help-config writes each rule
RULES = {"check": "must be {}", "only": "only this value: {}", "no_effect": "no effect: {}",
         "departs": "not fairseq's default: {}"}
# checks several keys share
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
UNIT_INTERVAL = (lambda v: 0 <= v < 1, "in [0, 1)")
EPOCHS = (lambda v: v >= 0, ">= 0 epochs (0: never at an epoch's end)")


def key(default: Any = MISSING, help: str | None = None, *, factory: Callable | None = None,
        check: tuple[Callable, str] | None = None, only: str | None = None, no_effect: str | None = None,
        departs: str | None = None):
    """A dataclass field carrying its help and rules (see the module docstring)."""
    meta = {name: value for name, value in (("help", help), ("check", check), ("only", only), ("no_effect", no_effect),
                                            ("departs", departs)) if value is not None}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def same_as(cls: type, name: str, default: Any = MISSING) -> dataclasses.Field:
    """Another section's key of the same name (help and rules), with its default or ``default``."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field(default=default_of(f) if default is MISSING else default, metadata=f.metadata)


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else "???"


def rules(sections: dict[str, list[type]], kind: str) -> dict[str, Any]:
    """``{"group.key": rule}`` for every field of ``sections`` (group -> its dataclasses)
    that has a rule of ``kind``; ``only`` rules come as ``(the implemented value, why)``."""
    found = {}
    for group, classes in sections.items():
        for cls in classes:
            for f in dataclasses.fields(cls):
                if kind in f.metadata:
                    rule = (default_of(f), f.metadata[kind]) if kind == "only" else f.metadata[kind]
                    found.setdefault(f"{group}.{f.name}", rule)
    return found


def describe(sections: dict[str, list[type]]) -> str:
    """Every key of every section with its default and rules, group by group."""
    lines = []
    for group, classes in sections.items():
        for cls in classes:
            names = [f for f in dataclasses.fields(cls) if f.name == "_name"]
            title = f"{group}._name={default_of(names[0])}" if names else group or "top level"
            lines.append(f"{title}:")
            for f in dataclasses.fields(cls):
                if f.name == "_name":
                    continue
                note = "; ".join(text.format(f.metadata[k][1] if k == "check" else f.metadata[k])
                                 for k, text in RULES.items() if k in f.metadata)
                lines.append(f"  {group + '.' if group else ''}{f.name} = {default_of(f)!r}")
                text = f.metadata.get("help", "") + (f" ({note})" if note else "")
                lines.append(textwrap.fill(text, 100, initial_indent=" " * 6, subsequent_indent=" " * 6))
            lines.append("")
    return "\n".join(lines)
