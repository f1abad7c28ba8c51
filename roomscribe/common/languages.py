"""Languages and tasks a session may ask for, and whether a model can serve a request.

Pure (no third-party import), so the wire schema, the server and the pipeline share one list.
`LANGUAGE_CODES` is Whisper's list as faster-whisper spells it (tests check they agree); a model
has a subset of them (`base` lacks "yue", which only large-v3 has; an English-only model has "en").
"""

from __future__ import annotations

from dataclasses import dataclass

#: `language: "auto"`: detect the language of every utterance.
AUTO = "auto"
TASKS: tuple[str, ...] = ("transcribe", "translate")
LANGUAGE_CODES: tuple[str, ...] = (
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy", "da", "de", "el", "en",
    "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw", "he", "hi", "hr", "ht", "hu", "hy", "id", "is",
    "it", "ja", "jw", "ka", "kk", "km", "kn", "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg", "mi", "mk", "ml", "mn",
    "mr", "ms", "mt", "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro", "ru", "sa", "sd", "si", "sk",
    "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl", "tr", "tt", "uk", "ur", "uz",
    "vi", "yi", "yo", "zh", "yue",
)  # fmt: skip
#: What a `language` setting may be: "auto" or a code.
LANGUAGE_CHOICES: tuple[str, ...] = (AUTO, *LANGUAGE_CODES)


@dataclass(frozen=True)
class ModelLanguages:
    """What a model can do: English only, or these languages (and translation into English)."""

    multilingual: bool
    languages: frozenset[str] = frozenset({"en"})
    name: str = "the model"


ENGLISH_ONLY = ModelLanguages(multilingual=False)


def language_refusal(language: str, task: str, model: ModelLanguages) -> str | None:
    """Why `model` cannot serve `language` with `task` (a message for the client), or None if it can.

    `language` and `task` must already be valid choices (the wire schema checks them)."""
    if not model.multilingual:
        if language != "en" or task != "transcribe":
            asked = f"language {language!r}" if language != "en" else f"task {task!r}"
            return (
                f"{model.name} is an English-only model: it cannot serve {asked} (only language 'en', task 'transcribe'); "
                "a multilingual model does (ROOMSCRIBE_MODEL=base, pip install 'roomscribe[base]')"
            )
        return None
    if language != AUTO and language not in model.languages:
        return f"{model.name} does not know language {language!r}"
    return None
