"""Voice commands: configured phrases found in finals, tolerant of small recognition errors.

A command is a name and up to MAX_PHRASES phrases. Text and phrases are normalised the same way
(lowercase; hyphens and slashes become spaces; other punctuation goes; whole numbers 0–99 become
words, so "note 2" and "note two" are the same). A phrase matches a final when some run of the
final's words is within `allowance(n)` = TOLERANCE × (n − 1) edits of the n-word phrase: a missing
or extra word costs 1, a different word its character edit distance over the longer word's length
("node" for "note" costs 0.25, "and" for "end" 0.33). So a one-word phrase must be said exactly;
"end note" allows 0.25 ("end notes" matches, "and note" does not); "start a new note" allows 0.75
("start a new node" matches, "start new note" does not); a 7-word phrase allows 1.5 (one word
missing or extra, or a few misheard). The phrase may sit anywhere inside a longer final. Each
command matches a final at most once (its best phrase); several in one final come in the order
they were said.

Pure apart from `load_file` / `default_commands`, which read a TOML file (`ROOMSCRIBE_COMMANDS_FILE`;
the default ships as control/default_commands.toml):

    [[commands]]
    name = "start_note"
    phrases = ["start a new note"]
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files
from pathlib import Path

from agent.events import FinalTranscript
from control.schema import Command as CommandMessage
from control.schema import CommandSpec, SessionRecord

#: At most this many commands in a set (a session's or the server's), phrases per command,
#: characters and words per phrase, characters per name.
MAX_COMMANDS = 16
MAX_PHRASES = 4
MAX_PHRASE_CHARS = 100
MAX_PHRASE_WORDS = 8
MAX_NAME_CHARS = 64
#: Edit cost allowed per phrase word beyond the first (see the module docstring).
TOLERANCE = 0.25
NAME_PATTERN = r"^[a-z][a-z0-9_.-]*$"
DEFAULT_COMMANDS_FILE = "default_commands.toml"

log = logging.getLogger(__name__)

_NAME = re.compile(NAME_PATTERN)
_SPACES = re.compile(r"[-/–—_]+")
_NOT_WORD = re.compile(r"[^\w\s]+")
_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


class CommandError(ValueError):
    """A command set that cannot be used (the message says which command and why)."""


@dataclass(frozen=True)
class Command:
    name: str
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class Token:
    """One normalised word of a final, with the session times of the word it came from."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Match:
    name: str
    phrase: str
    first: int  # index of the first and last token of the final that matched
    last: int
    cost: float


def _number_words(token: str) -> list[str]:
    """A whole number 0–99 as words; anything else as it is."""
    if not token.isdigit() or len(token) > 2:
        return [token]
    value = int(token)
    if value < 20:
        return [_ONES[value]]
    tens, ones = divmod(value, 10)
    return [_TENS[tens]] if ones == 0 else [_TENS[tens], _ONES[ones]]


def normalise(text: str) -> list[str]:
    """The words of `text` as commands compare them."""
    text = _NOT_WORD.sub("", _SPACES.sub(" ", text.lower()).replace("'", "").replace("’", ""))
    return [word for token in text.split() for word in _number_words(token)]


def allowance(words: int) -> float:
    """The edit cost a phrase of `words` words may be off by and still match."""
    return TOLERANCE * max(0, words - 1)


@lru_cache(maxsize=4096)
def word_cost(a: str, b: str) -> float:
    """0 for the same word, 1 for unrelated ones: character edit distance over the longer length."""
    if a == b:
        return 0.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return min(1.0, previous[-1] / max(len(a), len(b)))


def find(phrase: Sequence[str], words: Sequence[str]) -> tuple[float, int, int] | None:
    """The best run of `words` for `phrase` (cost, first index, last index), anywhere in `words`.

    Word-level edit distance with a free start and end in `words` (semi-global alignment)."""
    m, n = len(phrase), len(words)
    if m == 0 or n == 0:
        return None
    cost = [0.0] * (n + 1)  # row i: best cost of phrase[:i] ending after words[:j]
    start = list(range(n + 1))  # where that run began
    for i in range(1, m + 1):
        new_cost, new_start = [float(i)], [0]
        for j in range(1, n + 1):
            options = (
                (cost[j - 1] + word_cost(phrase[i - 1], words[j - 1]), start[j - 1]),  # (mis)heard word
                (cost[j] + 1.0, start[j]),  # phrase word missing
                (new_cost[j - 1] + 1.0, new_start[j - 1]),  # extra word in the text
            )
            best = min(options, key=lambda option: option[0])
            new_cost.append(best[0])
            new_start.append(best[1])
        cost, start = new_cost, new_start
    end = min(range(1, n + 1), key=lambda j: (cost[j], j))
    first = min(start[end], end - 1)
    return cost[end], first, end - 1


class CommandSet:
    """Validated commands, matched against finals."""

    def __init__(self, commands: Iterable[Command]) -> None:
        self.commands = tuple(commands)
        self._phrases: list[tuple[str, str, list[str]]] = []
        if len(self.commands) > MAX_COMMANDS:
            raise CommandError(f"at most {MAX_COMMANDS} commands, got {len(self.commands)}")
        names: set[str] = set()
        for command in self.commands:
            _check_command(command)
            if command.name in names:
                raise CommandError(f"command {command.name!r} is defined twice")
            names.add(command.name)
            for phrase in command.phrases:
                self._phrases.append((command.name, phrase, normalise(phrase)))

    def __bool__(self) -> bool:
        return bool(self.commands)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CommandSet) and other.commands == self.commands

    def __hash__(self) -> int:
        return hash(self.commands)

    def __repr__(self) -> str:
        return f"CommandSet({list(self.commands)!r})"

    @classmethod
    def from_specs(cls, specs: Iterable[CommandSpec]) -> CommandSet:
        """From the wire form (`session.start.commands`, `SessionRecord.commands`)."""
        return cls(Command(spec.name, tuple(spec.phrases)) for spec in specs)

    def specs(self) -> list[CommandSpec]:
        return [CommandSpec(name=c.name, phrases=list(c.phrases)) for c in self.commands]

    def match(self, words: Sequence[str]) -> list[Match]:
        """The commands said in normalised `words`, in the order they were said."""
        best: dict[str, Match] = {}
        for name, phrase, phrase_words in self._phrases:
            found = find(phrase_words, words)
            if found is None or found[0] > allowance(len(phrase_words)) + 1e-9:
                continue
            cost, first, last = found
            current = best.get(name)
            if current is None or (cost, first) < (current.cost, current.first):
                best[name] = Match(name, phrase, first, last, cost)
        return sorted(best.values(), key=lambda match: (match.first, match.name))

    def match_text(self, text: str) -> list[Match]:
        return self.match(normalise(text))

    def messages(self, final: FinalTranscript) -> list[CommandMessage]:
        """The `command` events a final carries (seq 0: the session numbers them), times from its
        words when it has them, else the final's."""
        if not self._phrases:
            return []
        tokens = final_tokens(final)
        matches = self.match([t.word for t in tokens])
        return [
            CommandMessage(
                seq=0,
                name=m.name,
                phrase=m.phrase,
                text=final.text,
                utterance_id=final.utterance_id,
                start=round(tokens[m.first].start, 3),
                end=round(tokens[m.last].end, 3),
                participant=final.participant,
            )
            for m in matches
        ]


def final_tokens(final: FinalTranscript) -> list[Token]:
    """A final's normalised words with times: its word times, or its own start and end for each."""
    if final.words:
        return [Token(w, word.start, word.end) for word in final.words for w in normalise(word.word)]
    return [Token(w, final.start, final.end) for w in normalise(final.text)]


def _check_command(command: Command) -> None:
    name = command.name
    if not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and _NAME.match(name)):
        raise CommandError(
            f"command name {name!r} must be 1–{MAX_NAME_CHARS} characters of a-z, 0-9, '_', '.', '-', starting with a letter"
        )
    if not 0 < len(command.phrases) <= MAX_PHRASES:
        raise CommandError(f"command {name!r} needs 1–{MAX_PHRASES} phrases, got {len(command.phrases)}")
    for phrase in command.phrases:
        if not isinstance(phrase, str) or len(phrase) > MAX_PHRASE_CHARS:
            raise CommandError(f"command {name!r}: a phrase must be text of at most {MAX_PHRASE_CHARS} characters")
        words = normalise(phrase)
        if not 0 < len(words) <= MAX_PHRASE_WORDS:
            raise CommandError(f"command {name!r}: phrase {phrase!r} must have 1–{MAX_PHRASE_WORDS} words")


def parse_toml(text: str, source: str = "commands file") -> CommandSet:
    """A command set from TOML text: `[[commands]]` tables with `name` and `phrases`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CommandError(f"{source} is not valid TOML: {error}") from None
    tables = data.get("commands", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise CommandError(f"{source}: 'commands' must be an array of tables ([[commands]])")
    commands = []
    for table in tables:
        phrases = table.get("phrases")
        if not isinstance(phrases, list):
            raise CommandError(f"{source}: command {table.get('name')!r} needs a 'phrases' list")
        commands.append(Command(str(table.get("name", "")), tuple(phrases)))
    try:
        return CommandSet(commands)
    except CommandError as error:
        raise CommandError(f"{source}: {error}") from None


def load_file(path: str | Path) -> CommandSet:
    """The command set in a TOML file (CommandError when it cannot be read or used)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CommandError(f"cannot read the commands file {str(path)!r}: {error.strerror or error}") from None
    return parse_toml(text, f"commands file {str(path)!r}")


@cache
def default_commands() -> CommandSet:
    """The commands that ship with the package (control/default_commands.toml)."""
    return parse_toml(files("control").joinpath(DEFAULT_COMMANDS_FILE).read_text(encoding="utf-8"), DEFAULT_COMMANDS_FILE)


def server_commands(setting: str) -> CommandSet:
    """The server's commands for ROOMSCRIBE_COMMANDS_FILE: empty (unset) → the defaults, "off" →
    none, else that file."""
    if not setting:
        return default_commands()
    if setting.lower() in ("off", "none"):
        return CommandSet(())
    return load_file(setting)


def record_commands(record: SessionRecord) -> CommandSet | None:
    """A cluster session's commands, as its control replica resolved them (None: none)."""
    if not record.commands:
        return None
    try:
        return CommandSet.from_specs(record.commands)
    except CommandError as error:  # a newer control replica's limits: run the session without them
        log.warning("session %s: its voice commands are not usable here (%s); none are matched", record.session_id, error)
        return None
