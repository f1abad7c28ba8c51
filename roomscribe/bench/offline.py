"""The offline reference: the same model, settings and text guards as the server's finals, on each
whole clip at once (no VAD, no segmentation, no streaming)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.asr import AsrEngine, WhisperBackend
from agent.config import AsrConfig, PipelineConfig
from agent.textguard import GuardConfig, clean_segments, clean_text
from roomscribe.bench.corpus import Clip
from roomscribe.bench.plan import load_clip_audio


def guard_config(cfg: PipelineConfig) -> GuardConfig:
    """The guard settings the pipeline derives from its config."""
    return GuardConfig(
        drop_no_speech_prob=cfg.drop_no_speech_prob,
        drop_avg_logprob=cfg.drop_avg_logprob,
        hard_no_speech_prob=cfg.hard_no_speech_prob,
        min_avg_logprob=cfg.min_avg_logprob,
    )


def transcribe_offline(clips: Sequence[Clip], asr: AsrConfig, pipeline: PipelineConfig) -> list[str]:
    """One text per clip, decoded as a final (temperature fallback included)."""
    engine = AsrEngine(asr)
    engine.start_sync()
    guard = guard_config(pipeline)
    try:
        texts = []
        for clip in clips:
            audio = load_clip_audio(clip).astype(np.float32) / 32768.0
            result = engine.submit(audio, final=True, owner="bench-offline").future.result()
            texts.append(clean_text(clean_segments(result.segments, guard), guard) if result else "")
        return texts
    finally:
        engine.close_sync()


def transcribe_sessions_offline(sessions: Sequence[np.ndarray], asr: AsrConfig) -> list[str]:
    """The long-form reference: one faster-whisper call per whole session (int16 16 kHz), its VAD
    on, greedy (`asr.beam_size`), its own temperature fallback and conditioning on previous text —
    what a user of the same model would get offline. No text guards (they are the pipeline's)."""
    backend = WhisperBackend(asr)
    backend.load()
    model = backend.loaded_model()
    texts = []
    for audio in sessions:
        segments, _ = model.transcribe(audio.astype(np.float32) / 32768.0, language=asr.language,
                                       beam_size=asr.beam_size, vad_filter=True)  # fmt: skip
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts
