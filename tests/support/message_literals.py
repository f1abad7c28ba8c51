"""Finds control-protocol message types written by hand in Python source (issue 10: every message
type is named once, in control/schema.py; everything else goes through its structs or `tag_of`).

`hand_written_types(tree, allowed)` reports, in a parsed module:
- a string that is a message type (`"ping"`, `"session.ended"`) used as one: compared, matched,
  a key, in a tuple/list/set (an event filter), assigned, returned, `type=` or the first argument
  of `get`/`of_type`/`on`;
- in those places too, a dotted name in a message type's namespace (`"session.resume"`: a type
  that does not exist), unless it is in `allowed` (the client's own notice codes, such as
  `"session.resumed"`);
- the `type` field read or written by hand: `m["type"]`, `m.get("type")`, `x == "type"`,
  `{"type": ...}`.
Other call arguments (`git("status")`, `SessionEnded(reason="error")`) and docstrings are not
message types: they are skipped.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection
from pathlib import Path

from control import schema

MESSAGE_TYPES = frozenset(schema.CLIENT_MESSAGE_TYPES) | frozenset(schema.SERVER_MESSAGE_TYPES)
#: `session`, `transcript`, `auth`...: the first part of every dotted message type.
NAMESPACES = frozenset(t.split(".")[0] for t in MESSAGE_TYPES if "." in t)
_DOTTED = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
_TYPE_FIELD = "type"
#: Calls whose first argument is a message type when it is a string (`m.get`, `hub.of_type`, `client.on`).
_LOOKUPS = frozenset({"get", "of_type", "on"})


def hand_written_types(tree: ast.AST, allowed: Collection[str] = (), other_meaning: Collection[str] = ()) -> list[str]:
    """Where the module names a message type, or the `type` field, by hand (`line N: 'text'`).
    `other_meaning`: words that are message types but mean something else in this code (the
    bench's `command` field: the command line that produced its figures)."""
    skipped = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}  # docstrings
    skipped |= {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call) for arg in _plain_arguments(node)}
    found: dict[int, ast.Constant] = {}
    for node in ast.walk(tree):
        for constant in _suspects(node, allowed):
            if id(constant) not in skipped and constant.value not in other_meaning:
                found[id(constant)] = constant
    return [f"line {c.lineno}: {c.value!r}" for c in sorted(found.values(), key=lambda c: (c.lineno, c.col_offset))]


def scan_package(directory: Path, allowed: Collection[str] = (), other_meaning: Collection[str] = ()) -> dict[str, list[str]]:
    """`hand_written_types` of every module in `directory`, only those with findings."""
    found = {
        p.name: hand_written_types(ast.parse(p.read_text(encoding="utf-8")), allowed, other_meaning)
        for p in directory.glob("*.py")
    }
    return {name: lines for name, lines in sorted(found.items()) if lines}


def _plain_arguments(call: ast.Call) -> list[ast.expr]:
    """The arguments of `call` that do not name a message type (all but `type=` and a lookup's key)."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    positional = call.args[1:] if name in _LOOKUPS else call.args
    return [*positional, *(k.value for k in call.keywords if k.arg != _TYPE_FIELD)]


def _suspects(node: ast.AST, allowed: Collection[str]) -> list[ast.Constant]:
    """The string constants of `node` that name a message type or the `type` field by hand."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
        if text in MESSAGE_TYPES:
            return [node]
        if _DOTTED.match(text) and text.split(".")[0] in NAMESPACES and text not in allowed:
            return [node]
        return []
    if isinstance(node, ast.Compare):
        candidates = [node.left, *node.comparators]
    elif isinstance(node, ast.Subscript):
        candidates = [node.slice]
    elif isinstance(node, ast.MatchValue):
        candidates = [node.value]
    elif isinstance(node, ast.Dict):
        candidates = [k for k in node.keys if k is not None]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "of_type"):
        candidates = list(node.args[:1])
    else:
        return []
    return [c for c in candidates if isinstance(c, ast.Constant) and c.value == _TYPE_FIELD]
