"""Speech in other languages for language identification, synthesised by espeak-ng (Debian's
`espeak-ng`). Synthetic speech is fine for telling languages apart, never for accuracy claims."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import wave

import numpy as np
import pytest
import soxr

#: A sentence per language, with no pause long enough to end an utterance; Whisper base detects it
#: with high probability (and transcribes espeak-ng's Spanish better than its German or French).
SENTENCES = {
    "es": "Hoy hace buen tiempo y vamos juntos al parque con mis amigos",
}


def require_espeak() -> str:
    """espeak-ng's path; skip loudly when it is missing (under CI, fail: .ci/run installs it)."""
    path = shutil.which("espeak-ng")
    if path is None:
        msg = "LANGUAGE IDENTIFICATION TESTS NOT RUN: espeak-ng is missing (apt-get install espeak-ng)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def espeak(text: str, voice: str) -> np.ndarray:
    """`text` spoken by espeak-ng's `voice`, as 16 kHz mono int16."""
    wav = subprocess.run(
        [require_espeak(), "-v", voice, "-s", "150", "--stdout", text], capture_output=True, check=True, timeout=60
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    resampled = soxr.resample(samples, rate, 16000)
    return np.clip(resampled * 32768, -32768, 32767).astype(np.int16)
