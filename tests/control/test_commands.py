"""Voice command matching (control/commands.py): pure logic, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.events import FinalTranscript, Word
from control.commands import (
    MAX_COMMANDS,
    Command,
    CommandError,
    CommandSet,
    allowance,
    default_commands,
    find,
    load_file,
    normalise,
    parse_toml,
    server_commands,
    word_cost,
)
from control.config import ConfigError, Settings
from control.schema import CommandSpec

pytestmark = pytest.mark.timeout(30)

JFK_COMMAND = CommandSet([Command("jfk", ("ask not what your country can do",))])


def names(commands: CommandSet, text: str) -> list[str]:
    return [m.name for m in commands.match_text(text)]


def test_normalise_lowercases_strips_punctuation_and_spells_simple_numbers() -> None:
    assert normalise("Start a NEW note!") == ["start", "a", "new", "note"]
    assert normalise("note 2, page 21 and 40") == ["note", "two", "page", "twenty", "one", "and", "forty"]
    assert normalise("Don't re-open it") == ["dont", "re", "open", "it"]
    assert normalise("year 1999") == ["year", "1999"]  # only simple numbers become words
    assert normalise("…") == []


def test_word_cost_is_relative_character_distance() -> None:
    assert word_cost("note", "note") == 0.0
    assert word_cost("note", "node") == 0.25
    assert word_cost("end", "and") == pytest.approx(1 / 3)
    assert word_cost("note", "elephant") == 1.0


def test_find_locates_the_phrase_inside_a_longer_text() -> None:
    words = normalise("well then, start a new note about lunch")
    assert find(normalise("start a new note"), words) == (0.0, 2, 5)
    assert find(["x"], []) is None


def test_allowance_grows_with_the_phrase() -> None:
    assert allowance(1) == 0.0
    assert allowance(2) == 0.25
    assert allowance(4) == 0.75
    assert allowance(7) == 1.5


def test_default_commands_match_exact_phrases_inside_longer_finals() -> None:
    commands = default_commands()
    assert [c.name for c in commands.commands] == ["start_note", "stop_note"]
    assert names(commands, "Start a new note.") == ["start_note"]
    assert names(commands, "OK, so let's start a new note about the budget") == ["start_note"]
    assert names(commands, "Stop the note, please.") == ["stop_note"]
    assert names(commands, "That's it, end note.") == ["stop_note"]


def test_near_misses_within_tolerance_match() -> None:
    commands = default_commands()
    assert names(commands, "start a new node") == ["start_note"]  # one misheard letter
    assert names(commands, "Start an new note") == ["start_note"]
    assert names(commands, "end notes") == ["stop_note"]
    # The JFK phrase (7 words) tolerates a misheard word, or a missing one.
    assert names(JFK_COMMAND, "ask not what you country can do") == ["jfk"]
    assert names(JFK_COMMAND, "ask what your country can do") == ["jfk"]


def test_unrelated_speech_and_misses_beyond_tolerance_do_not_match() -> None:
    commands = default_commands()
    for text in (
        "The weather is nice today.",
        "I sent a note to the team",
        "start new note",  # two words missing from a four-word phrase
        "and note that the budget is late",  # "and" for "end" is more than a two-word phrase allows
        "The endnote is here",
        "",
    ):
        assert names(commands, text) == [], text
    assert names(JFK_COMMAND, "ask what you can do for your country") == []
    assert names(JFK_COMMAND, "And so my fellow Americans") == []


def test_several_commands_in_one_final_come_in_spoken_order_once_each() -> None:
    commands = default_commands()
    matches = commands.match_text("End note. Start a new note. Start a new note again.")
    assert [(m.name, m.phrase) for m in matches] == [("stop_note", "end note"), ("start_note", "start a new note")]


def test_messages_carry_the_final_and_the_phrase_times_from_words() -> None:
    words = tuple(
        Word(w, start, start + 0.4, 0.9)
        for w, start in ((" So", 1.0), (" start", 1.5), (" a", 2.0), (" new", 2.5), (" note.", 3.0))
    )
    final = FinalTranscript("u3", "So start a new note.", 1.0, 3.4, "silence", words=words, participant="bob")
    [message] = default_commands().messages(final)
    assert (message.name, message.phrase, message.text) == ("start_note", "start a new note", "So start a new note.")
    assert (message.utterance_id, message.participant, message.start, message.end) == ("u3", "bob", 1.5, 3.4)
    without_words = FinalTranscript("u4", "End note", 5.0, 6.0, "silence")
    [message] = default_commands().messages(without_words)
    assert (message.name, message.start, message.end) == ("stop_note", 5.0, 6.0)
    assert CommandSet(()).messages(without_words) == []


def test_command_sets_are_validated() -> None:
    with pytest.raises(CommandError, match="defined twice"):
        CommandSet([Command("a", ("one",)), Command("a", ("two",))])
    with pytest.raises(CommandError, match="name"):
        CommandSet([Command("Bad Name", ("one",))])
    with pytest.raises(CommandError, match="phrases"):
        CommandSet([Command("a", ())])
    with pytest.raises(CommandError, match="words"):
        CommandSet([Command("a", ("?!",))])
    with pytest.raises(CommandError, match="words"):
        CommandSet([Command("a", ("one two three four five six seven eight nine",))])
    with pytest.raises(CommandError, match=f"at most {MAX_COMMANDS}"):
        CommandSet([Command(f"c{i}", ("go",)) for i in range(MAX_COMMANDS + 1)])


def test_wire_specs_round_trip() -> None:
    specs = [CommandSpec(name="mark", phrases=["mark this", "bookmark"])]
    commands = CommandSet.from_specs(specs)
    assert commands.specs() == specs
    assert names(commands, "please mark this") == ["mark"]


def test_toml_files(tmp_path: Path) -> None:
    path = tmp_path / "commands.toml"
    path.write_text('[[commands]]\nname = "mark"\nphrases = ["mark this"]\n', encoding="utf-8")
    assert load_file(path) == CommandSet([Command("mark", ("mark this",))])
    assert server_commands(str(path)) == load_file(path)
    assert server_commands("") == default_commands()
    assert not server_commands("off")
    with pytest.raises(CommandError, match="cannot read"):
        load_file(tmp_path / "missing.toml")
    with pytest.raises(CommandError, match="not valid TOML"):
        parse_toml("[[commands]\n")
    with pytest.raises(CommandError, match="phrases"):
        parse_toml('[[commands]]\nname = "x"\n')
    with pytest.raises(CommandError, match="array of tables"):
        parse_toml('commands = "x"\n')


def test_the_server_setting_reads_the_file_once_and_refuses_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "commands.toml"
    path.write_text('[[commands]]\nname = "mark"\nphrases = ["mark this"]\n', encoding="utf-8")
    assert Settings.from_env({"ROOMSCRIBE_COMMANDS_FILE": str(path)}).commands == load_file(path)
    assert Settings.from_env({}).commands == default_commands() == Settings().commands
    assert not Settings.from_env({"ROOMSCRIBE_COMMANDS_FILE": "off"}).commands
    path.write_text('[[commands]]\nname = "Mark"\nphrases = ["mark this"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"ROOMSCRIBE_COMMANDS_FILE: .*name 'Mark'"):
        Settings.from_env({"ROOMSCRIBE_COMMANDS_FILE": str(path)})
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"ROOMSCRIBE_COMMANDS_FILE": str(tmp_path / "missing.toml")})
