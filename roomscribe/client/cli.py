"""`roomscribe push` and `roomscribe listen`: entry points taking argv, returning an exit code."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

from control.schema import tag_of
from roomscribe.client.control_client import ControlClient, TokenSource
from roomscribe.client.errors import ClientError
from roomscribe.client.events import SessionEnded
from roomscribe.client.options import ClientOptions
from roomscribe.client.printer import EventPrinter
from roomscribe.client.recording import RecordingCatcher, save_recording
from roomscribe.client.sources import MicrophoneUnavailable, PcmStream, microphone_stream, wav_stream
from roomscribe.client.stream import send_stream
from roomscribe.common.backoff import Backoff


def default_url() -> str:
    """ROOMSCRIBE_URL, else the local server's address from ROOMSCRIBE_HOST / ROOMSCRIBE_PORT."""
    if os.environ.get("ROOMSCRIBE_URL"):
        return os.environ["ROOMSCRIBE_URL"]
    host = os.environ.get("ROOMSCRIBE_HOST") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"ws://{host}:{os.environ.get('ROOMSCRIBE_PORT') or 8080}/v1/control"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="control socket (default: ROOMSCRIBE_URL or ws://127.0.0.1:8080/v1/control)")
    parser.add_argument("--token", default=None, help="control token (default: minted from ROOMSCRIBE_CONTROL_SECRET)")
    parser.add_argument("--env-file", default=".env", help="settings file read before the environment (default .env)")


def _token(args: argparse.Namespace, user: str, permissions: tuple[str, ...] = ()) -> TokenSource:
    """--token as given, else a provider that mints a fresh token from the secret whenever the
    client asks (each connect, and `auth.expiring`): a long session outlives any one token."""
    if args.token:
        return str(args.token)
    secret = os.environ.get("ROOMSCRIBE_CONTROL_SECRET", "").strip()
    if not secret:
        raise ClientError("no --token given and ROOMSCRIBE_CONTROL_SECRET is not set (put it in .env, or pass --token)")
    from tokens import mint_control_token

    return functools.partial(mint_control_token, secret, user, ttl_s=3600, permissions=permissions)


def _prepare(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args = parser.parse_args(list(argv))
    load_dotenv(args.env_file, override=False)
    if args.url is None:
        args.url = default_url()
    return args


# -- push ---------------------------------------------------------------------------------------------
def push_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomscribe push", description="Stream a WAV file or the microphone and print transcripts."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="16-bit PCM WAV, any sample rate, mono or stereo")
    source.add_argument("--mic", action="store_true", help="the default microphone (needs the 'mic' extra: sounddevice)")
    parser.add_argument("--transport", choices=("ws", "livekit"), default=None,
                        help="audio path (default: the server's default transport)")
    parser.add_argument("--user", default="cli", help="user id of the minted token (default cli)")
    parser.add_argument("--fast", action="store_true", help="ws: send the file as fast as the server takes it")
    parser.add_argument("--no-interim", action="store_true", help="finals only")
    parser.add_argument("--record", action="store_true",
                        help="have the server record the session, then save its audio and transcript here")
    parser.add_argument("--save-dir", default=".",
                        help="with --record: where to save <session_id>.flac, .json and .vtt (default: .)")
    parser.add_argument("--keyterm", action="append", default=None, metavar="TERM",
                        help="a word or name to spell right (repeatable; replaces the server's ROOMSCRIBE_KEYTERMS)")
    parser.add_argument("--prompt", default=None, help="text the speech follows on from (a topic, spellings)")
    parser.add_argument("--words", action="store_true", help="word times and confidences on every final (printed)")
    parser.add_argument("--language", help='a Whisper language code, or "auto": detect per utterance (default: the server\'s)')
    parser.add_argument("--task", choices=("transcribe", "translate"), help="translate: English text (multilingual models)")
    parser.add_argument("--queue-ms", type=int, default=20,
                        help="livekit: the SDK's audio queue in ms (default 20; raise it on a loaded machine)")
    _common(parser)
    return parser


def push_main(argv: list[str]) -> int:
    """`roomscribe push FILE|--mic [--transport ws|livekit] [--url] [--token] [--user] [--fast] [--record]`."""
    args = _prepare(push_parser(), argv)
    try:
        return asyncio.run(_push(args))
    except (ClientError, MicrophoneUnavailable, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _source(file: str | None, mic: bool, transport: str, fast: bool) -> PcmStream:
    if mic:
        return microphone_stream(frame_ms=10 if transport == "livekit" else 20)
    assert file is not None
    if transport == "livekit":  # the LiveKit SDK paces capture in real time
        return wav_stream(file, speed=0, frame_ms=10, tail_silence_s=1.0)
    return wav_stream(file, speed=0 if fast else 1.0, tail_silence_s=1.0)


async def _push(args: argparse.Namespace) -> int:
    return await push(
        args.url,
        _token(args, args.user, ("record",) if args.record else ()),
        file=args.file,
        mic=args.mic,
        transport=args.transport,
        fast=args.fast,
        interim=not args.no_interim,
        queue_ms=args.queue_ms,
        save_recording_to=Path(args.save_dir) if args.record else None,
        keyterms=args.keyterm,
        prompt=args.prompt,
        words=args.words or None,
        language=args.language,
        task=args.task,
    )


async def push(
    url: str,
    token: TokenSource,
    *,
    file: str | None = None,
    mic: bool = False,
    transport: str | None = None,
    fast: bool = False,
    interim: bool = True,
    queue_ms: int = 20,
    printer: EventPrinter | None = None,
    save_recording_to: Path | None = None,
    keyterms: list[str] | None = None,
    prompt: str | None = None,
    words: bool | None = None,
    language: str | None = None,
    task: str | None = None,
) -> int:
    """Stream a file (or the microphone) as one session and print its events; 0 when a final
    arrived and no error did. `transport=None` takes the server's default; `keyterms`, `prompt`,
    `words`, `language`, `task`: the session's decoding options (None: the server's defaults). With
    `save_recording_to`, the server records the session and its files are saved there at the end."""
    if mic:
        microphone_stream()  # fail early, with the install hint, before connecting
    printer = printer or EventPrinter()
    client = ControlClient(url, token)
    client.on(printer)
    recording = RecordingCatcher()
    client.on(recording)
    record = save_recording_to is not None
    try:
        hello = await client.connect()
        transport = transport or hello.get("default_transport") or "ws"
        stream = _source(file, mic, transport, fast)
        chosen = (("keyterms", keyterms), ("prompt", prompt), ("words", words), ("language", language), ("task", task))
        options: dict[str, Any] = {k: v for k, v in chosen if v is not None}
        if record:
            options["record"] = True
        if transport == "livekit":
            await _push_livekit(client, stream, interim, queue_ms, options)
        else:
            await client.start_session(transport="ws", sample_rate=stream.sample_rate, channels=stream.channels,
                                       interim=interim, **options)
            await send_stream(client, stream)
        await client.stop_session()
        if save_recording_to is not None:
            if recording.ready is None:
                raise ClientError("the session ended without a recording (see the status messages above)")
            for path in await save_recording(client, recording.ready, save_recording_to):
                print(f"saved {path}", file=sys.stderr, flush=True)
    finally:
        await client.close()
    return 0 if printer.finals and not printer.errors else 1


async def _push_livekit(
    client: ControlClient, stream: PcmStream, interim: bool, queue_ms: int, options: dict[str, Any]
) -> None:
    from roomscribe.client.livekit_publisher import LiveKitPublisher

    publisher = LiveKitPublisher(client, queue_size_ms=queue_ms)
    try:
        await client.start_session(transport="livekit", interim=interim, **options)
        await publisher.publish(stream)
    finally:
        await publisher.close()


# -- listen -------------------------------------------------------------------------------------------
def listen_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roomscribe listen", description="Print the events of another session as they happen.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--session-id", help="watch this session (ends when it ends)")
    target.add_argument("--user", help="watch every session of this user, now and later (until Ctrl-C)")
    parser.add_argument("--as-user", default="cli", help="user id of the minted token (default cli); it gets the 'monitor' claim")
    parser.add_argument("--events", default=None, help="comma-separated event types (default: all)")
    _common(parser)
    return parser


def listen_main(argv: list[str]) -> int:
    """`roomscribe listen --session-id ID | --user USER [--events ...] [--url] [--token]`."""
    args = _prepare(listen_parser(), argv)
    try:
        return asyncio.run(_listen(args))
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _listen(args: argparse.Namespace) -> int:
    client = ControlClient(args.url, _token(args, args.as_user, ("monitor",)),
                           options=ClientOptions(backoff=Backoff(attempts=None)))
    client.on(EventPrinter())
    ended = asyncio.Event()
    if args.session_id:
        client.on(lambda event: ended.set() if event.subscription_id else None, (tag_of(SessionEnded),))
    events = args.events.split(",") if args.events else None
    try:
        await client.connect()
        subscription = await client.subscribe(session_id=args.session_id, user=args.user, events=events)
        print(f"watching {args.session_id or 'user ' + args.user} ({subscription.id})", file=sys.stderr, flush=True)
        await ended.wait()
    finally:
        await client.close()
    return 0
