"""Media agent: the transport-independent transcription pipeline and the LiveKit room agent."""

import os

# CTranslate2's OpenMP threads spin while they wait for work by default. On a host whose cores are
# busy with anything else that spinning takes the CPU the decode needs: six tiny.en finals took
# 8-90 s of wall time and 4-65 s of CPU at load 8-12 on 2 cores, against 1.8-2.5 s and 1.4-1.9 s
# waiting passively (`python -m roomscribe.bench.wait_policy`; docs/benchmarks.md). OpenMP reads
# this once, when CTranslate2 is loaded, so it is set here, before any agent module can import it;
# a value the operator set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
