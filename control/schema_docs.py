"""docs/protocol.md's message tables, rendered from the wire schema (control/schema.py).

Each generated block sits between `<!-- schema:NAME -->` and `<!-- /schema:NAME -->`; the prose
around the blocks is written by hand. `python -m control.schema_docs` rewrites the blocks in place,
and writes the web page's examples/web/protocol.js (control/schema_js.py); `--check` only says
whether both files are up to date (exit 1 when not; tests do the same).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec.inspect as mi

from control import schema_js
from control.schema import (
    ERROR_CODES,
    REQUESTS,
    SERVER_MESSAGES,
    SUBSCRIBABLE,
    Forwardable,
    Request,
    ServerMessage,
    tag_of,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
_BLOCK = re.compile(r"(<!-- schema:(?P<name>[a-z-]+) -->)(?P<body>.*?)(<!-- /schema:(?P=name) -->)", re.DOTALL)
#: Fields every forwarded event may carry; described once in the Monitor subscriptions section.
_FORWARDING_FIELDS = frozenset(Forwardable.__struct_fields__)
#: A literal with more values is shown as a string; the prose lists them (e.g. the language codes).
_MAX_LISTED = 12


def _cell(text: str) -> str:
    """Text for one table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _unwrap(t: mi.Type) -> tuple[mi.Type, str]:
    """The type inside an Annotated wrapper, and the field's description if it has one."""
    if isinstance(t, mi.Metadata):
        description = (t.extra_json_schema or {}).get("description", "")
        return t.type, str(description)
    return t, ""


def _type(t: mi.Type) -> str:
    """A short rendering of a field's type: `string`, `int`, `"a" | "b"`, `[string]`, `{a, b?}`."""
    t, _ = _unwrap(t)
    if isinstance(t, mi.UnionType):
        return " | ".join(_type(member) for member in t.types if not isinstance(member, mi.NoneType))
    if isinstance(t, mi.LiteralType) and len(t.values) > _MAX_LISTED:  # e.g. the language codes
        return f"string (one of {len(t.values)})"
    if isinstance(t, mi.LiteralType):
        return " | ".join(json.dumps(value) for value in t.values)
    if isinstance(t, (mi.ListType, mi.VarTupleType)):
        return f"[{_type(t.item_type)}]"
    if isinstance(t, mi.TupleType):
        return "[" + ", ".join(_type(item) for item in t.item_types) + "]"
    if isinstance(t, mi.StructType):
        return "{" + ", ".join(_field(f) for f in t.fields) + "}"
    names: dict[type[mi.Type], str] = {
        mi.StrType: "string",
        mi.IntType: "int",
        mi.FloatType: "number",
        mi.BoolType: "bool",
        mi.DictType: "object",
    }
    return names.get(type(t), "any")


def _field_name(field: mi.Field) -> str:
    return field.encode_name + ("" if field.required else "?")


def _field(field: mi.Field) -> str:
    """`name: type`, `name?: type` when it may be left out, `type | null` when it is sent as null,
    `= default` for a plain default that is not null."""
    t, _ = _unwrap(field.type)
    nullable = field.required and isinstance(t, mi.UnionType) and any(isinstance(m, mi.NoneType) for m in t.types)
    single = isinstance(t, mi.LiteralType) and len(t.values) == 1  # its one value says it already
    shown_default = field.default not in (None, mi.NODEFAULT) and not single
    default = f" = {json.dumps(field.default)}" if shown_default else ""
    return f"{_field_name(field)}: {_type(t)}" + (" | null" if nullable else "") + default


def _fields(cls: type[ServerMessage] | type[Request]) -> list[mi.Field]:
    """The message's fields as the tables show them: `id` first, forwarding fields left out."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    forwarded = issubclass(cls, Forwardable)
    fields = [f for f in info.fields if not (forwarded and f.name in _FORWARDING_FIELDS and not f.required)]
    first = ("id", "seq")
    return sorted(fields, key=lambda f: first.index(f.name) if f.name in first else len(first))


def _row(cls: type[ServerMessage] | type[Request]) -> str:
    fields = _fields(cls)
    rendered = ", ".join(f"`{_field(f)}`" for f in fields)
    doc = " ".join((cls.__doc__ or "").split())
    notes = [doc if doc.endswith(".") else doc + "."]
    for field in fields:
        _, description = _unwrap(field.type)
        if description and field.name != "id":
            notes.append(f"`{field.encode_name}`: {description}.")
    return f"| `{tag_of(cls)}` | {_cell(rendered)} | {_cell(' '.join(notes))} |"


def _table(header: str, rows: list[str]) -> str:
    columns = header.count("|") - 1
    return "\n".join([header, "|" + "---|" * columns, *rows])


def _client_messages() -> str:
    return _table("| type | fields | what it does |", [_row(cls) for cls in REQUESTS])


def _server_messages() -> str:
    return _table("| type | fields | when |", [_row(cls) for cls in SERVER_MESSAGES])


def _error_codes() -> str:
    return _table("| code | meaning |", [f"| `{code}` | {_cell(meaning)} |" for code, meaning in ERROR_CODES.items()])


def _subscribable() -> str:
    return ", ".join(f"`{name}`" for name in sorted(SUBSCRIBABLE))


#: Block name → its rendering; tables stand on their own lines, lists run inside a sentence.
BLOCKS: dict[str, tuple[Callable[[], str], bool]] = {
    "client-messages": (_client_messages, True),
    "server-messages": (_server_messages, True),
    "error-codes": (_error_codes, True),
    "subscribable": (_subscribable, False),
}


def render(text: str) -> str:
    """`text` with every generated block rendered from the schema; raises on an unknown block name."""

    def block(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise ValueError(f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        make, own_lines = BLOCKS[name]
        body = f"\n{make()}\n" if own_lines else make()
        return f"{match.group(1)}{body}{match.group(4)}"

    found = {m["name"] for m in _BLOCK.finditer(text)}
    missing = set(BLOCKS) - found
    if missing:
        raise ValueError(f"docs have no block for {', '.join(sorted(missing))}")
    return _BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control.schema_docs", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DOC, help=f"the document (default {DOC})")
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is not up to date")
    args = parser.parse_args(argv)
    doc = args.path.read_text(encoding="utf-8")
    js = schema_js.JS.read_text(encoding="utf-8") if schema_js.JS.exists() else ""
    stale = [(path, wanted) for path, current, wanted in ((args.path, doc, render(doc)), (schema_js.JS, js, schema_js.render()))
             if wanted != current]  # fmt: skip
    for path, wanted in stale:
        if args.check:
            print(f"{path} is out of date: run python -m control.schema_docs", file=sys.stderr)
        else:
            path.write_text(wanted, encoding="utf-8")
            print(f"updated {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
