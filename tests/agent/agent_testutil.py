"""Helpers for the pipeline tests (audio loading, paced feeding, event-order checks)."""

from __future__ import annotations

import asyncio
import re
import time
import wave
from pathlib import Path

import numpy as np

from agent.events import FinalTranscript, InterimTranscript, SpeechEnded, SpeechStarted

AUDIO_DIR = Path(__file__).resolve().parents[2] / "examples" / "audio"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
LIBRI_TEXT = (
    "He began a confused complaint against the wizard who had vanished behind the curtain on the left."
)


def load_wav(name: str) -> np.ndarray:
    """int16 mono samples of a 16 kHz example file."""
    with wave.open(str(AUDIO_DIR / name)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


async def feed_paced(pipeline, samples: np.ndarray, rate: int, channels: int = 1,
                     frame_ms: int = 20, speed: float = 4.0) -> float:
    """Feed interleaved samples in `frame_ms` frames at `speed`× real time (inf = no pauses
    except yielding to the loop every 10 frames). Returns the CPU seconds the calling thread
    spent inside feed() (thread time: robust to other processes loading the machine)."""
    per_frame = rate * frame_ms // 1000 * channels
    in_feed = 0.0
    for k, i in enumerate(range(0, samples.shape[0], per_frame)):
        t = time.thread_time()
        pipeline.feed(samples[i : i + per_frame], rate, channels)
        in_feed += time.thread_time() - t
        if speed == float("inf"):
            if k % 10 == 9:
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(frame_ms / 1000 / speed)
    return in_feed


async def feed_keeping_up(pipeline, engine, samples: np.ndarray, rate: int, frame_ms: int = 20, timeout_s: float = 10.0) -> None:
    """Feed as fast as the model keeps up: after each frame, wait until the worker has taken any
    queued speculative final (as on a machine where decoding starts before the next frames
    arrive), so whether a speculative result is used does not depend on thread timing."""
    per_frame = rate * frame_ms // 1000
    loop = asyncio.get_running_loop()
    for i in range(0, samples.shape[0], per_frame):
        pipeline.feed(samples[i : i + per_frame], rate, 1)
        deadline = loop.time() + timeout_s
        while engine.stats["pending_speculative"]:
            if loop.time() > deadline:
                raise TimeoutError("the ASR worker never took the speculative final")
            await asyncio.sleep(0.001)


def check_event_order(events) -> None:
    """Per utterance: SpeechStarted, InterimTranscript*, FinalTranscript?, SpeechEnded; utterances
    do not interleave; times are consistent."""
    current = None
    seen_final = False
    ids = set()
    last_end = -1.0
    for ev in events:
        if isinstance(ev, SpeechStarted):
            assert current is None, f"{ev} while {current} is open"
            assert ev.utterance_id not in ids, "utterance ids must be unique"
            assert ev.start >= last_end - 1e-9
            ids.add(ev.utterance_id)
            current, seen_final = ev, False
        elif isinstance(ev, InterimTranscript):
            assert current is not None and ev.utterance_id == current.utterance_id
            assert not seen_final, "interim after final"
            assert ev.text.strip()
        elif isinstance(ev, FinalTranscript):
            assert current is not None and ev.utterance_id == current.utterance_id
            assert not seen_final
            assert ev.text.strip()
            assert ev.start == current.start and ev.end >= ev.start
            assert ev.reason in ("silence", "max_length", "stop")
            seen_final = True
        elif isinstance(ev, SpeechEnded):
            assert current is not None and ev.utterance_id == current.utterance_id
            assert ev.end >= current.start
            last_end = ev.end
            current = None
    assert current is None, "an utterance was left open"


