"""Keyterms and a prompt: biasing Whisper's decoder, the same way on both backends.

A session's `keyterms` (names, jargon it should spell right) become faster-whisper's `hotwords`
(joined with ", ") and its `prompt` (text the speech follows on from, e.g. a topic or the spelling
of a phrase) becomes the `initial_prompt`, the previous text before the window. Both go before
Whisper's start-of-transcript tokens, after `<|startofprev|>`: `decoder_prompt()` builds that
token sequence with faster-whisper's own `get_prompt`, for the adaptive backend's direct
CTranslate2 call; the full backend passes the same two inputs to faster-whisper, which builds
the same sequence.

Whisper reads at most 223 tokens of previous text (half its 448-token context, minus one), so
keyterms and prompt together are bounded by `MAX_PROMPT_TOKENS`, checked where they are set
(`check_prompt`): at `session.start` (a coded error) and in the server's defaults (at start-up).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import PipelineConfig

if TYPE_CHECKING:  # untyped library (Any to mypy): named for the reader
    from faster_whisper.tokenizer import Tokenizer

log = logging.getLogger(__name__)

#: Tokens of previous text Whisper reads: 448 // 2 - 1, as faster-whisper truncates it.
MAX_PROMPT_TOKENS = 223
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 50
MAX_PROMPT_CHARS = 1000
KEYTERM_SEPARATOR = ", "


class PromptError(ValueError):
    """Keyterms or a prompt that cannot be used; `code` says which kind of problem."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "too_long" | "invalid"


@dataclass(frozen=True)
class DecoderPrompt:
    """What biases one session's decoding (empty: nothing, the decoder's default prompt)."""

    keyterms: tuple[str, ...] = ()
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.keyterms or self.text.strip())

    @property
    def hotwords(self) -> str | None:
        """faster-whisper's `hotwords`: the keyterms in one string."""
        return KEYTERM_SEPARATOR.join(self.keyterms) or None

    @property
    def initial_prompt(self) -> str | None:
        """faster-whisper's `initial_prompt`."""
        return self.text.strip() or None


def with_context(prompt: DecoderPrompt | None, context: str) -> DecoderPrompt | None:
    """`prompt` with what was said just before (`context`) after its text: the previous text the
    decoder reads ends with the context, nearest the audio (Whisper keeps the end of a long one)."""
    context = context.strip()
    if not context:
        return prompt
    base = prompt or DecoderPrompt()
    return DecoderPrompt(base.keyterms, f"{base.text.strip()} {context}".strip())


def check_prompt(prompt: DecoderPrompt, count_tokens: Callable[[str], int]) -> None:
    """Raise PromptError unless the keyterms and prompt are within bounds (the message says which)."""
    if len(prompt.keyterms) > MAX_KEYTERMS:
        raise PromptError("too_long", f"at most {MAX_KEYTERMS} keyterms (got {len(prompt.keyterms)})")
    for term in prompt.keyterms:
        if not term.strip():
            raise PromptError("invalid", "a keyterm is empty")
        if len(term) > MAX_KEYTERM_CHARS:
            raise PromptError("too_long", f"a keyterm has at most {MAX_KEYTERM_CHARS} characters: {term[:60]!r}…")
        if _has_control(term):
            raise PromptError("invalid", f"a keyterm holds a control character (a line break?): {term[:60]!r}")
    if len(prompt.text) > MAX_PROMPT_CHARS:
        raise PromptError("too_long", f"the prompt has at most {MAX_PROMPT_CHARS} characters (got {len(prompt.text)})")
    if _has_control(prompt.text.replace("\n", " ").replace("\t", " ")):
        raise PromptError("invalid", "the prompt holds a control character")
    used = sum(count_tokens(" " + part) for part in (prompt.hotwords, prompt.initial_prompt) if part)
    if used > MAX_PROMPT_TOKENS:
        raise PromptError(
            "too_long",
            f"keyterms and prompt take {used} tokens together; Whisper reads at most {MAX_PROMPT_TOKENS}",
        )


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def session_config(
    base: PipelineConfig,
    *,
    keyterms: Sequence[str] | None = None,
    prompt: str | None = None,
    words: bool | None = None,
) -> PipelineConfig:
    """A session's pipeline settings: the server's, with what the session asked for (None: the
    server's default) in their place."""
    changes: dict[str, Any] = {}
    if keyterms is not None:
        changes["keyterms"] = tuple(t.strip() for t in keyterms)
    if prompt is not None:
        changes["prompt"] = prompt
    if words is not None:
        changes["word_timestamps"] = words
    return dataclasses.replace(base, **changes) if changes else base


def pipeline_prompt(config: PipelineConfig) -> DecoderPrompt | None:
    """The decoder prompt of a pipeline's settings, or None when they bias nothing."""
    prompt = DecoderPrompt(tuple(config.keyterms), config.prompt)
    return prompt if prompt else None


def decoder_prompt(model: Any, tokenizer: Tokenizer, prompt: DecoderPrompt | None, *, without_timestamps: bool) -> list[int]:
    """The decoder's prompt tokens, built as faster-whisper builds them (`WhisperModel.get_prompt`)
    from the same `initial_prompt` and `hotwords` the full backend passes it."""
    previous: list[int] = []
    hotwords = None
    if prompt:
        if prompt.initial_prompt:
            previous = tokenizer.encode(" " + prompt.initial_prompt)
        hotwords = prompt.hotwords
    tokens: list[int] = model.get_prompt(tokenizer, previous, without_timestamps=without_timestamps, hotwords=hotwords)
    return tokens


# -- counting tokens where no model is loaded (the control plane) ----------------------------------
@functools.lru_cache(maxsize=4)
def token_counter(model_path: str | None) -> Callable[[str], int]:
    """Counts a text's tokens with the model's tokenizer (`model_path`: its directory or a packaged
    model's name, agent/models.py; None: the default model). Without one, the UTF-8 length, which is
    never fewer (Whisper's byte-level BPE tokens hold at least one byte each)."""
    try:
        from tokenizers import Tokenizer as HfTokenizer

        from agent.models import tokenizer_file

        path = tokenizer_file(model_path)
        if path is None:
            raise FileNotFoundError(f"no tokenizer.json for model {model_path or 'tiny.en'!r}")
        hf = HfTokenizer.from_file(str(path))
    except Exception as error:  # no model here, or no tokenizer file: the upper bound
        log.info("counting prompt tokens as UTF-8 bytes (no tokenizer: %s)", error)
        return _utf8_length

    def count(text: str) -> int:
        return len(hf.encode(text, add_special_tokens=False).ids)

    return count


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))
