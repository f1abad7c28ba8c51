"""Streaming resampler: rates, channel counts, sample formats."""

import numpy as np
import pytest
import soxr

from agent.resample import StreamingResampler, to_mono_float32

pytestmark = pytest.mark.timeout(20)


def _tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _stream(samples: np.ndarray, rate: int, channels: int, frame_ms: int = 10) -> np.ndarray:
    r = StreamingResampler()
    step = rate * frame_ms // 1000 * channels
    parts = [r.process(samples[i : i + step], rate, channels) for i in range(0, len(samples), step)]
    parts.append(r.flush())
    return np.concatenate(parts)


def test_16k_mono_passthrough_is_exact():
    x = _tone(16000, 1.0)
    out = _stream(x, 16000, 1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_int16_is_scaled_like_float32():
    x = (np.arange(-32768, 32768, 7, dtype=np.int32)).astype(np.int16)
    np.testing.assert_allclose(to_mono_float32(x), x.astype(np.float32) / 32768.0)


def test_48k_stereo_int16_streaming_equals_one_shot():
    mono = _tone(48000, 2.0)
    left, right = mono, 0.5 * mono
    inter = np.empty(mono.size * 2, dtype=np.int16)
    inter[0::2] = np.round(left * 32767).astype(np.int16)
    inter[1::2] = np.round(right * 32767).astype(np.int16)
    out = _stream(inter, 48000, 2)
    expected = soxr.resample(to_mono_float32(inter, 2), 48000, 16000, quality="HQ")
    assert abs(out.size - 32000) <= 1
    n = min(out.size, expected.size)
    np.testing.assert_allclose(out[:n], expected[:n], atol=1e-5)
    # The mix really averaged the channels: amplitude ≈ 0.75 × 0.5.
    assert 0.36 < np.max(np.abs(out[1000:-1000])) < 0.39


def test_2d_frames_and_rate_change():
    r = StreamingResampler()
    a = r.process(np.stack([_tone(48000, 0.5)] * 2, axis=1), 48000, 2)
    b = r.process(_tone(16000, 0.5), 16000, 1)  # rate change flushes the 48k filter first
    total = a.size + b.size
    assert abs(total - 16000) <= 2


def test_bad_input_is_rejected():
    r = StreamingResampler()
    with pytest.raises(ValueError):
        r.process(np.zeros(3, dtype=np.int16), 48000, 2)
    with pytest.raises(ValueError):
        r.process(np.zeros(4, dtype=np.int16), 0, 1)
    with pytest.raises(ValueError):  # int32 PCM would be mis-scaled: refuse it
        r.process(np.zeros(4, dtype=np.int32), 16000, 1)
