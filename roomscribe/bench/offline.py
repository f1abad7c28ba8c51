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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m roomscribe.bench.offline [--model NAME] [--clips N]`: a model's WER on the Asterisk
    corpus decoded offline, and its CPU per audio second. No streaming and no timing, so the figures
    hold on a loaded machine, where the streaming bench loses utterances."""
    import argparse
    import json
    import os
    import time

    from control.config import Settings
    from roomscribe.bench.corpus import resolve_corpus
    from roomscribe.bench.plan import pick_clips
    from roomscribe.bench.wer import corpus_wer

    parser = argparse.ArgumentParser(prog="python -m roomscribe.bench.offline", description=main.__doc__)
    parser.add_argument("--model", help="tiny.en, base or a CTranslate2 directory (default ROOMSCRIBE_MODEL)")
    parser.add_argument("--clips", type=int, default=40, help="corpus clips, picked at random with --seed (default 40)")
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args(argv)
    if args.model:
        os.environ["ROOMSCRIBE_MODEL"], os.environ["ROOMSCRIBE_MODEL_PATH"] = args.model, ""
    settings = Settings.from_env()
    clips = pick_clips(resolve_corpus(build=False).clips, args.clips, seed=args.seed, min_s=0, max_s=1e9)
    cpu = time.process_time()
    hyps = transcribe_offline(clips, settings.asr, settings.pipeline)
    audio_s = sum(c.duration_s for c in clips)
    refs = [c.text for c in clips]
    result = {
        "model": settings.asr.model_path or settings.asr.model,
        "clips": len(clips),
        "audio_min": round(audio_s / 60, 2),
        "cpu_s_per_audio_s": round((time.process_time() - cpu) / audio_s, 3),  # loading the model included
        "wer_numbers_as_words": corpus_wer(refs, hyps, numbers=True).as_dict(),
        "wer_raw": corpus_wer(refs, hyps).as_dict(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
