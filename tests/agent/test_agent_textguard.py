"""Text guards against Whisper hallucinations (synthetic segments, no model)."""

import pytest

from agent.asr import AsrSegment
from agent.textguard import GuardConfig, clean_text, collapse_repeats

pytestmark = pytest.mark.timeout(10)
G = GuardConfig()


def seg(text, no_speech=0.05, logprob=-0.2, cr=1.2):
    return AsrSegment(text, 0.0, 1.0, logprob, no_speech, cr, 0.0)


def test_confident_speech_is_kept():
    assert clean_text([seg(" Hello there."), seg(" How are you?")], G) == "Hello there. How are you?"


@pytest.mark.parametrize(
    "s",
    [
        seg(" Thank you.", no_speech=0.5, logprob=-0.4),  # stock phrase with no-speech mass
        seg(" Thanks for watching!", logprob=-0.7),  # stock phrase, unconfident
        seg(" you", no_speech=0.95, logprob=-1.5),
        seg(" Some words.", no_speech=0.95, logprob=-0.1),  # model says: no speech
        seg(" Some words.", no_speech=0.7, logprob=-0.9),
        seg(" Some words.", logprob=-1.8),
        seg(" hahahahahahahahahahahahahahahahahahahahahahaha", cr=3.1),  # repetitive, not a word loop
        seg(" [BLANK_AUDIO]"),
        seg(" (music) ♪"),
    ],
)
def test_non_speech_is_dropped(s):
    assert clean_text([s], G) == ""


@pytest.mark.parametrize(
    "text, cr, expected",
    [
        # Whisper's loop on a one-word utterance: dropping the segment would lose the word.
        (" Messages" * 18, 8.05, "Messages"),
        (" la la la la la la la la la la", 3.1, "la"),
        (" Press one. Press one. Press one. Press one. Press one.", 4.0, "Press one."),
    ],
)
def test_a_repetition_loop_keeps_its_words_once(text, cr, expected):
    assert clean_text([seg(text, cr=cr)], G) == expected


def test_confident_thank_you_survives():
    assert clean_text([seg(" Thank you.", no_speech=0.02, logprob=-0.15)], G) == "Thank you."


def test_annotations_are_stripped_from_real_text():
    assert clean_text([seg(" [laughs] That is funny.")], G) == "That is funny."


@pytest.mark.parametrize(
    "text,expected",
    [
        ("I will go go go go now", "I will go now"),
        ("and then we left, and then we left, and then we left.", "and then we left."),
        ("no, no, no, I said", "no, no, no, I said"),
        ("ask not what your country can do for you", "ask not what your country can do for you"),
    ],
)
def test_collapse_repeats(text, expected):
    assert collapse_repeats(text) == expected
