"""A faster Whisper backend: CTranslate2 called directly with a short encoder input, batched.

faster-whisper always runs the encoder over a 30-s window (3000 feature frames), which costs the
same for a 1-s utterance as for a 30-s one. CTranslate2's Whisper encoder also accepts shorter
inputs; this backend feeds it max(`min_encoder_s`, audio + `encoder_pad_s`) instead, and runs the
windows of several jobs (several pipelines) as one batch: one encode, one generate.

Whisper was trained on 30-s windows, so very short windows degrade it (looping output was seen
with a 4-s window for 2.5 s of speech); keep `min_encoder_s` conservative and re-measure WER
when changing it. Measured on 276 asterisk prompts (tiny.en int8, beam 1, finals settings, WER
without number normalisation): full window 10.8% at 0.61 CPU-s/clip; min 10 s 11.2% at 0.17;
min 5 s 14.4%; min 3 s 14.4%; min 10 s batched by 4: 11.6% at 0.14. On 20 chunks of 10-15 s the
full and 10-s-minimum windows gave identical transcripts (9.4% WER) at 0.69 vs 0.32 CPU-s.
Finals that need word timestamps use the full faster-whisper path.

Keyterms and a prompt (agent/prompting.py) are per job: each job's decoder prompt is built as
faster-whisper builds it, and a batch holds jobs whose prompts have the same length (CTranslate2
needs <|startoftranscript|> at the same position in every item), so a session that asked for no
bias decodes with the default prompt, batched as before. Language and task are per job too (each
job's prompt carries its own; every language's prompt has the same length); a job in "auto" gets
its language from `detect_language` on the batch's encoder output, as faster-whisper does on its
30-s window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .asr import AsrResult, AsrSegment, WhisperBackend
from .config import AsrConfig
from .prompting import DecoderPrompt, decoder_prompt
from .scheduler import AsrJob

if TYPE_CHECKING:  # untyped libraries (Any to mypy): named for the reader
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer

FRAMES_PER_S = 100  # log-mel frames per second of audio
MAX_FRAMES = 3000


class ShortWindowBackend(WhisperBackend):
    """Direct CTranslate2 decoding with an adaptive encoder window and real batching."""

    def __init__(self, config: AsrConfig) -> None:
        super().__init__(config)
        self._tokenizer: Tokenizer | None = None
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}  # (language, task) → its tokenizer
        self._suppress: list[int] = []
        self._prompt: list[int] = []  # the default: English (or the model's only language), transcribe, no bias
        # Prompts built so far (bounded): (bias, language, task) → tokens.
        self._prompts: dict[tuple[DecoderPrompt | None, str, str], list[int]] = {}

    def load(self) -> None:
        super().load()
        from faster_whisper.transcribe import get_suppressed_tokens

        self._tokenizer = self._tokenizer_for("en", "transcribe")  # decoding and suppressed tokens: any language's
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self._prompt = decoder_prompt(self.loaded_model(), self._tokenizer, None, without_timestamps=True)

    def _tokenizer_for(self, language: str, task: str) -> Tokenizer:
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = self._tokenizers.get((language, task))
        if tokenizer is None:
            m = self.loaded_model()
            multilingual = m.model.is_multilingual
            tokenizer = Tokenizer(m.hf_tokenizer, multilingual, task=task, language=language if multilingual else None)
            self._tokenizers[(language, task)] = tokenizer
        return tokenizer

    def prompt_for(self, job: AsrJob, language: str = "en") -> list[int]:
        """The job's decoder prompt tokens: `language` and its task, and its bias (keyterms and
        prompt, and for a final the context: `AsrJob.decoder_prompt`)."""
        prompt = job.decoder_prompt
        if not prompt and language == "en" and job.task == "transcribe":
            return self._prompt
        key = (prompt or None, language, job.task)
        tokens = self._prompts.get(key)
        if tokens is None:
            if len(self._prompts) >= 256:
                self._prompts.clear()
            tokenizer = self._tokenizer_for(language, job.task)
            tokens = decoder_prompt(self.loaded_model(), tokenizer, prompt or None, without_timestamps=True)
            self._prompts[key] = tokens
        return tokens

    def _languages(self, enc: ctranslate2.StorageView, jobs: Sequence[AsrJob]) -> list[tuple[str, float | None]]:
        """Each job's language, and its probability where it was detected (the job asked for "auto")."""
        fixed = [self.language_of(j) for j in jobs]
        if not self.loaded_model().model.is_multilingual:
            return [("en", None)] * len(jobs)
        if all(f is not None for f in fixed):
            return [(f or "en", None) for f in fixed]
        detected = self.loaded_model().model.detect_language(enc)  # per job: [(token, probability)], best first
        return [
            (f, None) if f is not None else (d[0][0][2:-2], float(d[0][1])) for f, d in zip(fixed, detected, strict=True)
        ]

    def frames_for(self, n_samples: int) -> int:
        """Encoder frames for a job: audio + padding, at least the minimum, a multiple of 100."""
        cfg = self.config
        want = n_samples / 16000 + cfg.encoder_pad_s
        want = max(want, cfg.min_encoder_s)
        return min(MAX_FRAMES, math.ceil(want) * FRAMES_PER_S)

    def transcribe_batch(self, jobs: Sequence[AsrJob]) -> list[AsrResult]:
        results: dict[int, AsrResult] = {}
        batchable = []
        for k, job in enumerate(jobs):
            if job.kind.decodes_as_final and job.word_timestamps:
                results[k] = self._transcribe(job)  # full faster-whisper path
            else:
                batchable.append(k)
        # Jobs are batched with others of the same window size (padding a short job to a long
        # job's window would cost as much as running it alone); one encode serves the batch, and
        # jobs whose prompts differ in length are generated in separate calls (`_generate_grouped`).
        groups: dict[int, list[int]] = {}
        for k in batchable:
            groups.setdefault(self.frames_for(jobs[k].audio.shape[0]), []).append(k)
        for ks in groups.values():
            results.update(zip(ks, self._decode([jobs[k] for k in ks]), strict=False))
        return [results[k] for k in range(len(jobs))]

    # -- internals -----------------------------------------------------------------------------

    def _features(self, jobs: Sequence[AsrJob]) -> tuple[np.ndarray, int]:
        fe = self.loaded_model().feature_extractor
        feats = [fe(j.audio) for j in jobs]  # [80, n]
        frames = max(self.frames_for(j.audio.shape[0]) for j in jobs)
        batch = np.zeros((len(jobs), feats[0].shape[0], frames), dtype=np.float32)
        for b, f in enumerate(feats):
            n = min(f.shape[1], frames)
            batch[b, :, :n] = f[:, :n]
        return batch, frames

    def _encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        import ctranslate2

        return self.loaded_model().model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)

    def _generate(
        self, enc: ctranslate2.StorageView, prompts: list[list[int]], max_length: int, temperature: float = 0.0
    ) -> list[ctranslate2.models.WhisperGenerationResult]:
        cfg = self.config
        kw: dict[str, Any]
        if temperature > 0:
            kw = {"beam_size": 1, "num_hypotheses": 1, "sampling_topk": 0,
                  "sampling_temperature": temperature}
        else:
            kw = {"beam_size": cfg.beam_size}
        generated: list[ctranslate2.models.WhisperGenerationResult] = self.loaded_model().model.generate(
            enc,
            prompts,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            **kw,
        )
        return generated

    def _generate_grouped(
        self, enc: ctranslate2.StorageView, prompts: list[list[int]], max_length: int
    ) -> list[ctranslate2.models.WhisperGenerationResult]:
        """`_generate`, one call per prompt length: CTranslate2 needs <|startoftranscript|> at the
        same position in every batch item, so jobs whose prompts differ in length are decoded in
        separate calls over their rows of the shared encoder output."""
        lengths = sorted({len(p) for p in prompts})
        if len(lengths) == 1:
            return self._generate(enc, prompts, max_length)
        import ctranslate2

        encoded = np.array(enc)  # [batch, frames, width]
        out: dict[int, ctranslate2.models.WhisperGenerationResult] = {}
        for n in lengths:
            ks = [k for k, p in enumerate(prompts) if len(p) == n]
            rows = ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[ks]))
            out.update(zip(ks, self._generate(rows, [prompts[k] for k in ks], max_length), strict=True))
        return [out[k] for k in range(len(prompts))]

    def _max_length(self, jobs: Sequence[AsrJob], prompts: list[list[int]]) -> int:
        # Speech rarely exceeds ~7 tokens/s; the cap bounds the cost of a looping decode.
        audio_s = max(j.audio.shape[0] for j in jobs) / 16000
        return min(448, max(map(len, prompts)) + int(audio_s * 12) + 16)

    def _segment(self, r: ctranslate2.models.WhisperGenerationResult, temperature: float, audio_s: float) -> AsrSegment:
        from faster_whisper.transcribe import get_compression_ratio

        if self._tokenizer is None:
            raise RuntimeError("backend not loaded: call load() first")
        tokens = r.sequences_ids[0]
        text = self._tokenizer.decode(tokens)
        avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)
        return AsrSegment(
            text=text,
            start=0.0,
            end=audio_s,
            avg_logprob=float(avg_logprob),
            no_speech_prob=float(r.no_speech_prob),
            compression_ratio=float(get_compression_ratio(text.strip())),
            temperature=temperature,
        )

    def _needs_fallback(self, seg: AsrSegment) -> bool:
        cfg = self.config
        bad = seg.compression_ratio > cfg.compression_ratio_threshold or (
            seg.avg_logprob < cfg.log_prob_threshold
        )
        silent = seg.no_speech_prob > cfg.no_speech_threshold and seg.avg_logprob < cfg.log_prob_threshold
        return bad and not silent

    def _decode(self, jobs: Sequence[AsrJob]) -> list[AsrResult]:
        t0 = time.perf_counter()
        features, frames = self._features(jobs)
        enc = self._encode(features)
        languages = self._languages(enc, jobs)
        prompts = [self.prompt_for(job, lang) for (lang, _), job in zip(languages, jobs, strict=True)]
        out = self._generate_grouped(enc, prompts, self._max_length(jobs, prompts))
        segs = [self._segment(r, 0.0, j.audio.shape[0] / 16000) for r, j in zip(out, jobs, strict=False)]
        for k, job in enumerate(jobs):
            if job.kind.decodes_as_final and self._needs_fallback(segs[k]):
                segs[k] = self._fallback(job, segs[k], prompts[k])
        infer_s = time.perf_counter() - t0
        results = []
        for job, seg, (language, probability) in zip(jobs, segs, languages, strict=False):
            keep = not (
                seg.no_speech_prob > self.config.no_speech_threshold
                and seg.avg_logprob < self.config.log_prob_threshold
            )
            results.append(
                AsrResult(
                    segments=(seg,) if keep and seg.text.strip() else (),
                    audio_s=job.audio.shape[0] / 16000,
                    infer_s=infer_s,
                    extra={"encoder_frames": frames, "batch": len(jobs)},
                    language=language if probability is not None else None,
                    language_probability=probability,
                )
            )
        return results

    def _fallback(self, job: AsrJob, first: AsrSegment, prompt: list[int]) -> AsrSegment:
        """Temperature fallback for one final, as faster-whisper does (re-encodes it alone)."""
        features, _ = self._features([job])
        enc = self._encode(features)
        tried = [first]
        for t in self.config.final_temperatures:
            if t <= 0:
                continue
            r = self._generate(enc, [prompt], self._max_length([job], [prompt]), temperature=t)[0]
            seg = self._segment(r, t, job.audio.shape[0] / 16000)
            tried.append(seg)
            if not self._needs_fallback(seg):
                return seg
        ok = [s for s in tried if s.compression_ratio <= self.config.compression_ratio_threshold]
        return max(ok or tried, key=lambda s: s.avg_logprob)
