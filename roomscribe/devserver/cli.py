"""``roomscribe devserver``: run the LiveKit-compatible development server in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from roomscribe.common.net import is_loopback

from .app import DEFAULT_KEYS, DevServer

KEYS_ENV = "ROOMSCRIBE_DEVSERVER_KEYS"  # lets a parent pass keys without a visible command line


def parse_keys(text: str) -> dict[str, str]:
    """``"key:secret[,key2:secret2]"`` → ``{key: secret}``."""
    keys: dict[str, str] = {}
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, secret = pair.partition(":")
        if not sep or not key or not secret:
            raise argparse.ArgumentTypeError(f"expected KEY:SECRET, got {pair!r}")
        keys[key] = secret
    if not keys:
        raise argparse.ArgumentTypeError("no API keys given")
    return keys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roomscribe devserver",
                                description="LiveKit-compatible server for development and tests "
                                            "(not for production).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other than loopback needs --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host: anyone who can reach it and knows a key pair can use it "
                        "(pass your own --keys; never in production)")
    p.add_argument("--port", type=int, default=7880, help="port (default 7880; 0 picks a free one)")
    p.add_argument("--keys", type=parse_keys, default=os.environ.get(KEYS_ENV, "devkey:secret"),
                   help=f"API key pairs KEY:SECRET[,KEY:SECRET] (default ${KEYS_ENV} or devkey:secret)")
    p.add_argument("--empty-timeout", type=float, default=20.0,
                   help="close rooms after this many seconds empty (default 20)")
    p.add_argument("--ice-addresses", default="loopback",
                   help="host candidates to offer: 'loopback' (default), 'local' (this machine's "
                        "own interface addresses) or a comma-separated list")
    p.add_argument("--ping-interval", type=int, default=5, help="seconds between client pings")
    p.add_argument("--ping-timeout", type=int, default=15, help="drop clients silent this long")
    p.add_argument("--no-single-pc", action="store_true", help="404 on /rtc/v1 (clients fall back)")
    p.add_argument("--no-dual-pc", action="store_true", help="404 on /rtc")
    p.add_argument("--no-low-latency-audio", action="store_true",
                   help="decode published audio and re-encode it for each subscriber (aiortc's own "
                        "jitter buffer) instead of forwarding the Opus packets unchanged")
    p.add_argument("--log-level", default="INFO")
    return p


async def _serve(srv: DevServer) -> None:
    await srv.start()
    print(f"LiveKit dev server: {srv.url}  (API key(s): {', '.join(srv.keys)})", flush=True)
    print(f"  LIVEKIT_URL={srv.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # pragma: no cover
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await srv.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point used by ``roomscribe devserver``; returns a process exit code."""
    args = build_parser().parse_args(argv)
    if not is_loopback(args.host):
        if not args.allow_remote:
            print(f"error: --host {args.host} is not a loopback address: the development server is for this "
                  f"machine only; pass --allow-remote to expose it anyway (never in production)", file=sys.stderr)
            return 2
        if args.keys == DEFAULT_KEYS:
            print("warning: listening beyond this machine with the public default key pair (devkey:secret): "
                  "pass your own with --keys KEY:SECRET", file=sys.stderr)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.WARNING)
    srv = DevServer(host=args.host, port=args.port, keys=args.keys, empty_timeout_s=args.empty_timeout,
                    ice_addresses=args.ice_addresses, own_thread=False,
                    ping_interval_s=args.ping_interval, ping_timeout_s=args.ping_timeout,
                    single_pc=not args.no_single_pc, dual_pc=not args.no_dual_pc,
                    low_latency_audio=not args.no_low_latency_audio)
    try:
        import uvloop

        uvloop.run(_serve(srv))
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(srv))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
