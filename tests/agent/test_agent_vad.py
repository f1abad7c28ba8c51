"""Streaming Silero VAD equals faster-whisper's whole-file VAD exactly."""

import numpy as np
import pytest

from agent.vad import WINDOW, StreamingVad, whole_file_probs
from agent_testutil import load_wav

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("name", ["jfk.wav", "libri_61-70968-0000.wav"])
def test_streaming_equals_whole_file(name):
    audio = load_wav(name).astype(np.float32) / 32768.0
    reference = whole_file_probs(audio)
    vad = StreamingVad()
    rng = np.random.default_rng(1)
    out, i = [], 0
    while i < audio.size:  # irregular pieces, from 1 sample to several windows
        n = int(rng.integers(1, 3 * WINDOW))
        out.append(vad.process(audio[i : i + n]))
        i += n
    out.append(vad.flush())
    streamed = np.concatenate(out)
    assert streamed.shape == reference.shape
    np.testing.assert_array_equal(streamed, reference)
    assert reference.max() > 0.9  # there is speech in these clips


def test_single_windows_equal_whole_file_on_noise():
    rng = np.random.default_rng(2)
    audio = (rng.standard_normal(16000 * 2) * 0.05).astype(np.float32)
    reference = whole_file_probs(audio)
    vad = StreamingVad()
    streamed = np.concatenate(
        [vad.process(audio[i : i + WINDOW]) for i in range(0, audio.size, WINDOW)] + [vad.flush()]
    )
    np.testing.assert_array_equal(streamed, reference)


def test_state_matters():
    """Without the carried state the output differs (guards against a stateless wrapper)."""
    audio = load_wav("jfk.wav").astype(np.float32)[: 16000 * 3] / 32768.0
    reference = whole_file_probs(audio)
    stateless = np.array([StreamingVad().process(audio[i : i + WINDOW])[0]
                          for i in range(0, audio.size - WINDOW + 1, WINDOW)])
    assert np.abs(stateless - reference[: stateless.size]).max() > 0.1
