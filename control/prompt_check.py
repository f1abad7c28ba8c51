"""`session.start`'s keyterms and prompt, checked against their bounds (agent/prompting.py)."""

from __future__ import annotations

from agent.prompting import DecoderPrompt, PromptError, check_prompt, token_counter
from control.schema import ProtocolError, SessionStart


def check_session_prompt(request: SessionStart, model_path: str | None) -> None:
    """Raise `prompt.too_long` / `prompt.invalid` when the request's keyterms or prompt cannot be
    used (tokens counted with the model's tokenizer, see `token_counter`)."""
    if request.keyterms is None and request.prompt is None:
        return
    prompt = DecoderPrompt(tuple(request.keyterms or ()), request.prompt or "")
    try:
        check_prompt(prompt, token_counter(model_path))
    except PromptError as error:
        raise ProtocolError(f"prompt.{error.code}", f"session.start: {error}", request.id) from None
