"""Context across utterances (the session's recent finals as the next final's prompt) and the
longest-pause cut rule, with a fake model."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agent.asr import AsrEngine, AsrResult, AsrSegment
from agent.config import AsrConfig, PipelineConfig
from agent.events import FinalTranscript, PipelineEvent
from agent.pipeline import TranscriptionPipeline
from agent.segmenter import Segmenter, SpeechEnd, longest_pause
from agent_testutil import check_event_order, feed_paced, load_wav

pytestmark = pytest.mark.timeout(30)

class ContextBackend:
    """Says how much audio it heard ("Heard 3.0 s."); records the context of each final-kind
    decode by the text it answered (speculative decodes included: the latest one counts)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.contexts: dict[str, str] = {}

    def load(self) -> None:
        pass

    def transcribe_batch(self, jobs):
        out = []
        for j in jobs:
            time.sleep(self.delay)
            text = f"Heard {len(j.audio) / 16000:.1f} s."
            if j.kind.decodes_as_final:
                self.contexts[text] = j.context
            seg = AsrSegment(text, 0.0, 1.0, -0.1, 0.01, 1.0, 0.0)
            out.append(AsrResult(segments=(seg,), audio_s=len(j.audio) / 16000, infer_s=self.delay))
        return out


def _three_utterances() -> np.ndarray:
    """Three utterances of different lengths (so the fake model's answers differ)."""
    libri = load_wav("libri_61-70968-0000.wav")
    gap = np.zeros(int(16000 * 0.8), np.int16)
    return np.concatenate([libri, gap, libri[: 16000 * 2], gap, libri[: 16000 * 3], gap])


async def _run(cfg: PipelineConfig, delay: float = 0.2) -> tuple[list[FinalTranscript], ContextBackend]:
    backend = ContextBackend(delay)
    eng = AsrEngine(AsrConfig(max_batch=4), backend=backend)
    await eng.start()
    events: list[PipelineEvent] = []
    p = TranscriptionPipeline(eng, cfg, events.append)
    # All audio almost at once: a slow model then has several finals of this session to run.
    await feed_paced(p, _three_utterances(), 16000, speed=float("inf"))
    await p.finish()
    await p.aclose()
    await eng.close()
    check_event_order(events)
    return [e for e in events if isinstance(e, FinalTranscript)], backend


async def test_each_final_gets_the_finals_before_it_as_context_even_when_the_model_is_behind() -> None:
    finals, backend = await _run(PipelineConfig(interims=True, final_context_chars=200))
    texts = [f.text for f in finals]
    assert len(set(texts)) == 3
    assert [backend.contexts[t] for t in texts] == ["", texts[0], f"{texts[0]} {texts[1]}"]


async def test_context_keeps_the_last_whole_words_within_the_limit() -> None:
    finals, backend = await _run(PipelineConfig(interims=False, final_context_chars=14))
    # "Heard 5.9 s. Heard 2.9 s.": its last 14 characters are ". Heard 2.9 s.", which starts
    # inside a word ("s."): that partial word is dropped.
    assert backend.contexts[finals[2].text] == finals[1].text


async def test_without_context_finals_get_none() -> None:
    finals, backend = await _run(PipelineConfig(interims=False))
    assert len(finals) == 3 and set(backend.contexts.values()) == {""}


def test_longest_pause_is_the_middle_of_the_longest_quiet_run() -> None:
    probs = [0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.2, 0.2, 0.9]
    assert longest_pause(probs, 0.35) == 4
    assert longest_pause([0.9, 0.8], 0.35) is None
    assert longest_pause([0.1, 0.9, 0.1], 0.35) == 2  # ties: the latest


def test_a_max_length_cut_lands_in_the_longest_pause_not_the_quietest_window() -> None:
    cfg = PipelineConfig(max_utterance_s=2.0, max_cut_lookback_s=1.0, max_cut_rule="longest_pause")
    seg = Segmenter(cfg)
    window_s = 512 / 16000
    n = int(2.0 / window_s)
    probs = [0.9] * n
    probs[n - 20 : n - 14] = [0.2] * 6  # a 0.19 s pause, 0.45–0.6 s before the limit
    probs[n - 5] = 0.0  # one very quiet window: where the "quietest" rule would cut
    ends = [b for p in probs for b in seg.push(p) if isinstance(b, SpeechEnd)]
    assert len(ends) == 1 and ends[0].reason == "max_length"
    assert ends[0].sample == (n - 18) * 512  # the pause is windows n-20 … n-15
    quiet = Segmenter(PipelineConfig(max_utterance_s=2.0, max_cut_lookback_s=1.0))
    [end] = [b for p in probs for b in quiet.push(p) if isinstance(b, SpeechEnd)]
    assert end.sample == (n - 5) * 512


@pytest.mark.timeout(180)  # three decodes of 5 s: ~1 s on a quiet machine, ~40 s on a loaded one
def test_context_reaches_the_real_decoder_per_job_in_one_batch(engine) -> None:
    """On the batched CTranslate2 path each job has its own prompt: a final with context and one
    without, in one generate call, both transcribe the speech; the context changes the decoder's
    scores (it was conditioned on it) and sits after <|startofprev|> in that job's prompt only."""
    from agent.ct2backend import ShortWindowBackend
    from agent.scheduler import AsrJob, JobKind
    from agent.textguard import GuardConfig, clean_text
    from agent_testutil import LIBRI_TEXT, norm

    backend = engine.backend
    assert isinstance(backend, ShortWindowBackend)
    audio = np.concatenate([np.zeros(4800, np.float32), load_wav("libri_61-70968-0000.wav").astype(np.float32) / 32768])
    context = "The Wizard of Oz. Dorothy went to see the wizard."
    with_ctx = AsrJob(kind=JobKind.FINAL, owner="t", audio=audio, context=context)
    without = AsrJob(kind=JobKind.FINAL, owner="t", audio=audio)
    prompt = backend.prompt_for(with_ctx)
    tok = backend._tokenizer
    assert tok is not None and prompt[0] == tok.sot_prev and tok.decode(prompt[1 : prompt.index(tok.sot)]).strip() == context
    assert backend.prompt_for(without)[0] == tok.sot
    a, b = backend.transcribe_batch([with_ctx, without])
    assert a.extra["batch"] == b.extra["batch"] == 2
    for res in (a, b):
        words = norm(clean_text(res.segments, GuardConfig())).split()
        assert len(set(words) & set(norm(LIBRI_TEXT).split())) >= len(norm(LIBRI_TEXT).split()) - 3, words
    assert a.segments[0].avg_logprob != pytest.approx(b.segments[0].avg_logprob, abs=1e-4)
