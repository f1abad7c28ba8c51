"""The offline reference: the same model, settings and text guards as the server's finals, on each
whole clip at once (no VAD, no segmentation, no streaming)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.asr import AsrEngine
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
