"""Configuration for the ASR engine (one per process) and the per-session pipeline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AsrConfig:
    """Settings of the shared speech-recognition engine."""

    model_path: str | None = None  # a CTranslate2 directory; None → `model` (agent/models.py)
    model: str = "tiny.en"  # a packaged model's name ("tiny.en", "base") or a CTranslate2 directory
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 0  # 0 = auto: usable cores // workers
    workers: int = 1  # concurrent model calls (threads); each call uses cpu_threads
    language: str = "en"  # sessions' default: a code or "auto" (a session may ask for another)
    # Inference threads run this much nicer than the rest of the process, so real-time media
    # (WebRTC receive, the dev server's relay, the event loop) is never starved by the model.
    nice: int = 5
    # Encoder window: "full" = faster-whisper's 30-s window for every call; "adaptive" = call
    # CTranslate2 directly with max(min_encoder_s, audio + encoder_pad_s) (much cheaper).
    encoder_window: str = "adaptive"
    min_encoder_s: float = 10.0
    encoder_pad_s: float = 1.0
    max_batch: int = 4  # jobs per model call (only the adaptive backend batches for real)
    # Scheduler bounds.
    max_pending_interims: int = 64  # across all pipelines; the oldest is dropped beyond this
    # Decoding of finals: temperature fallback only for finals (interims are greedy, one pass).
    final_temperatures: tuple[float, ...] = (0.0, 0.2, 0.4)
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6


@dataclass
class PipelineConfig:
    """Settings of one transcription pipeline (one audio stream)."""

    interims: bool = True
    interim_interval_s: float = 0.5  # of session audio between interim requests
    silence_hangover_s: float = 0.3  # VAD silence that ends an utterance
    max_utterance_s: float = 15.0
    vad_threshold: float = 0.5
    pre_roll_s: float = 0.2  # audio kept before the detected speech start
    min_speech_s: float = 0.1  # speech needed before an utterance is confirmed
    # Added fields.
    vad_neg_threshold: float | None = None  # None → max(vad_threshold - 0.15, 0.01)
    max_cut_lookback_s: float = 1.5  # at max length, cut at the quietest point in this tail
    lead_in_s: float = 0.3  # digital silence prepended to every model input (steadier first words)
    min_interim_audio_s: float = 0.3  # no interim for less speech than this
    speculative_finals: bool = True  # start the final's decode when trailing silence begins
    speculative_delay_s: float = 0.1  # silence before the speculative decode starts
    speculative_min_logprob: float = -0.7  # a less confident speculative result is redone
    word_timestamps: bool = False  # word times on finals (costs extra decoding work)
    language: str | None = None  # a code or "auto" (detect per utterance); None: the engine's default
    task: str = "transcribe"  # "translate": English text
    # Decoder bias (agent/prompting.py): terms to spell right (hotwords) and text the speech follows.
    keyterms: tuple[str, ...] = ()
    prompt: str = ""
    # The session's last finals (up to this many characters, whole words) are the decoder's prompt
    # for the next final; 0 = each final decoded alone. Finals then run one after another.
    final_context_chars: int = 0
    # At max_utterance_s: "quietest" window of the lookback, or the middle of its "longest_pause"
    # (a run of windows below the VAD's negative threshold; the quietest window if there is none).
    max_cut_rule: str = "quietest"
    max_pending_finals: int = 4  # per pipeline, before an "asr_backlog" notice (finals never drop)
    drop_notice_interval_s: float = 10.0  # of session audio between "interims_dropped" notices
    # Text guards against Whisper hallucinations.
    drop_no_speech_prob: float = 0.6  # drop a segment above this no_speech_prob ...
    drop_avg_logprob: float = -0.8  # ... when its avg_logprob is also below this
    hard_no_speech_prob: float = 0.9  # drop a segment above this regardless
    min_avg_logprob: float = -1.5  # drop a segment below this regardless
