"""examples/web/protocol.js: the wire schema's message types as an ES module for the web page.

The page (examples/web/app.js) names every message type through this module (`RequestType.SessionStart`,
`MessageType.FinalTranscript`, keyed by the schema's class names) instead of writing the strings out.
Reading a name the schema does not have throws, so a typo fails loudly. The file is checked in
(the page stays static files, no build step); `python -m control.schema_docs` regenerates it with
docs/protocol.md, and `--check` (and a test) fails when it is out of date.
"""

from __future__ import annotations

from pathlib import Path

from control.schema import PROTOCOL_VERSION, REQUESTS, SERVER_MESSAGES, Request, ServerMessage, tag_of

JS = Path(__file__).resolve().parent.parent / "examples" / "web" / "protocol.js"


def _table(classes: tuple[type[Request], ...] | tuple[type[ServerMessage], ...]) -> str:
    rows = [f"  {cls.__name__}: '{tag_of(cls)}'," for cls in classes]  # tags hold no quote
    return "{\n" + "\n".join(rows) + "\n}"


def render() -> str:
    """The module's whole text."""
    return f"""\
// GENERATED from control/schema.py by `python -m control.schema_docs`: do not edit by hand.
// The control protocol's message types (docs/protocol.md), by the schema's class names.

export const PROTOCOL_VERSION = {PROTOCOL_VERSION};

/** A frozen table whose unknown names throw (a misspelt message type fails loudly). */
function strict(name, table) {{
  return new Proxy(Object.freeze(table), {{
    get(target, key) {{
      if (typeof key === 'string' && !(key in target)) throw new Error(`${{name}}.${{key}} is not in the wire schema`);
      return target[key];
    }},
  }});
}}

/** Client → server request types. */
export const RequestType = strict('RequestType', {_table(REQUESTS)});

/** Server → client message types. */
export const MessageType = strict('MessageType', {_table(SERVER_MESSAGES)});
"""
