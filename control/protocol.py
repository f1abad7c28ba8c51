"""Pipeline events on the wire: the schema's message for each `agent.events` event.

The wire schema (control/schema.py) knows nothing of the pipeline; this is the one place that maps
pipeline events onto its structs. The schema names that control/ modules have always imported from
here are re-exported.
"""

from __future__ import annotations

from agent.events import (
    FinalTranscript,
    InterimTranscript,
    PipelineEvent,
    PipelineNotice,
    SpeechEnded,
    SpeechStarted,
)
from control import schema
from control.schema import PROTOCOL_VERSION, AudioFormat, ProtocolError

__all__ = ["PROTOCOL_VERSION", "AudioFormat", "ProtocolError", "event_message"]


def _time(seconds: float) -> float:
    """Session-audio times go out in milliseconds' precision."""
    return round(seconds, 3)


def _confidence(probability: float) -> float:
    """A word's confidence: its probability, in [0, 1] to three decimals."""
    return round(min(max(float(probability), 0.0), 1.0), 3)


def event_message(event: PipelineEvent, seq: int) -> schema.SessionEvent:
    """The server message numbered `seq` for a pipeline event."""
    if isinstance(event, SpeechStarted):
        return schema.SpeechStart(
            seq=seq, utterance_id=event.utterance_id, start=_time(event.start), participant=event.participant
        )
    if isinstance(event, InterimTranscript):
        return schema.InterimTranscript(
            seq=seq,
            utterance_id=event.utterance_id,
            text=event.text,
            start=_time(event.start),
            end=_time(event.end),
            participant=event.participant,
        )
    if isinstance(event, FinalTranscript):
        words = None
        if event.words is not None:
            words = [
                schema.Word(
                    word=w.word,
                    start=_time(w.start),
                    end=_time(w.end),
                    probability=_time(w.probability),
                    confidence=_confidence(w.probability),
                )
                for w in event.words
            ]
        return schema.FinalTranscript(
            seq=seq,
            utterance_id=event.utterance_id,
            text=event.text,
            start=_time(event.start),
            end=_time(event.end),
            reason=event.reason,  # type: ignore[arg-type]  # agent.events types it as str; the pipeline sends only these three
            words=words,
            participant=event.participant,
            language=event.language,
            language_probability=None if event.language_probability is None else round(event.language_probability, 3),
        )
    if isinstance(event, SpeechEnded):
        return schema.SpeechEnd(
            seq=seq, utterance_id=event.utterance_id, end=_time(event.end), participant=event.participant
        )
    if isinstance(event, PipelineNotice):
        # An undeclared detail is a TypeError here, so the schema stays the whole contract.
        return schema.Status(seq=seq, code=event.code, message=event.message, **event.details)
    raise TypeError(f"not a pipeline event: {event!r}")
