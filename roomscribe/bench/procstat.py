"""CPU time and memory of a process from /proc (Linux), without psutil."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of all threads of `pid` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": fields[0] is state (field 3), so utime (14) and stime (15) are 11 and 12.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_bytes(pid: int | str = "self") -> dict[str, int]:
    """{"rss": current resident set, "peak_rss": high-water mark (VmHWM)} in bytes."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "peak_rss"] = int(value.split()[0]) * 1024
    return out
