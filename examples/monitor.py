"""Watch another user's sessions and print their finals, with ControlClient's async iterator.

    python examples/monitor.py --token "$(roomscribe token --user ops --permission monitor)" --user alice

Without the `monitor` claim a token may watch only its own user's sessions. The client reconnects
by itself and renews the subscription (events during an outage are not replayed to monitors).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from roomscribe.client import ControlClient, FinalTranscript, ServerError


async def watch(url: str, token: str, user: str) -> int:
    async with ControlClient(url, token) as client:
        try:
            await client.subscribe(user=user, events=["transcript.final", "session.ended"])
        except ServerError as error:
            print(f"refused: {error}", file=sys.stderr)
            return 1
        async for event in client.events():
            if isinstance(event, FinalTranscript):
                print(f"{event.raw['session_id']} [{event.start:6.2f}] {event.text}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8080/v1/control")
    parser.add_argument("--token", required=True)
    parser.add_argument("--user", required=True, help="the user whose sessions to watch")
    args = parser.parse_args()
    try:
        return asyncio.run(watch(args.url, args.token, args.user))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
