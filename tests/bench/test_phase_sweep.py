"""The phase sweep replays a recording at several VAD-window phases through the real model."""

from __future__ import annotations

import pytest

from roomscribe.bench.phase_sweep import shifts, sweep
from roomscribe.bench.wer import normalise
from roomscribe.common.package_data import sample_audio

pytestmark = pytest.mark.timeout(180)


def test_shifts_spread_evenly_over_one_vad_window() -> None:
    assert shifts(1) == [0]
    assert shifts(4) == [0, 128, 256, 384]


async def test_the_jfk_clip_starts_right_at_opposite_phases() -> None:
    results = await sweep([sample_audio("jfk.wav")], phases=2)
    assert [r.shift for r in results] == [0, 256]
    for r in results:  # stop before the plural's soft final "s" (the model's guess at a clipped sound)
        assert normalise(r.first_final).startswith("and so my fellow americ"), r
