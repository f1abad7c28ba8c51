"""Stream a WAV file to a roomscribe server over the ws transport and print transcripts.

    python examples/stream_wav.py --token TOKEN examples/audio/jfk.wav [--url ws://127.0.0.1:8080/v1/control] [--fast]

Uses `client.stream.stream_wav_ws`, a thin wrapper over `client.ControlClient`: if the link drops
the client reconnects, resumes the session and resends the audio, so no final is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from roomscribe.client.printer import EventPrinter
from roomscribe.client.stream import stream_wav_ws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="16-bit PCM WAV, any sample rate, mono or stereo")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/v1/control")
    parser.add_argument("--token", required=True, help="control token (roomscribe token --user ID)")
    parser.add_argument("--fast", action="store_true", help="send as fast as possible instead of real time")
    args = parser.parse_args()
    events = asyncio.run(
        stream_wav_ws(args.url, args.token, args.file, on_event=EventPrinter(), speed=0 if args.fast else 1.0, tail_silence_s=1.0)
    )
    return 0 if any(e["type"] == "transcript.final" for e in events) else 1


if __name__ == "__main__":
    sys.exit(main())
