"""`roomscribe bench`: measure latency, accuracy, cost and concurrency on this machine."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

from agent.models import ModelError, prepare
from control.config import ConfigError, Settings
from roomscribe.bench.report import render, target_rows
from roomscribe.bench.runner import TOPOLOGIES, BenchConfig, run_bench
from roomscribe.bench.transport import TRANSPORTS, TransportUnavailable

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout when run from one (site-packages when installed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roomscribe bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="about 2 minutes (default: the full bench, about 20 minutes)")
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON here")
    p.add_argument("--corpus", metavar="DIR",
                   help="Asterisk corpus directory (default ~/.cache/roomscribe/asterisk-corpus; built if missing)")
    p.add_argument("--no-build", action="store_true", help="do not download the corpus; fall back to examples/audio")
    p.add_argument("--examples-only", action="store_true", help="use only examples/audio (2 clips) as the corpus")
    p.add_argument("--transport", default="ws", help=f"comma-separated, from {', '.join(TRANSPORTS)} (default ws); "
                   "latency is measured on each, the sweep and accuracy on the first")  # fmt: skip
    p.add_argument("--server", choices=["subprocess", "inprocess"], default="subprocess",
                   help="run `roomscribe serve` as a subprocess (default; CPU/RSS are the server's own) "
                        "or in-process")  # fmt: skip
    cluster = p.add_argument_group("topology: what is measured (ws only for a cluster)")
    cluster.add_argument("--topology", choices=TOPOLOGIES, default="serve",
                         help="serve: one `roomscribe serve` (default); cluster: redis-server, N `roomscribe worker`s "
                              "and 2 `roomscribe control` replicas, sessions round-robin over the replicas")  # fmt: skip
    cluster.add_argument("--workers", type=int, default=2, help="cluster: worker processes (default 2)")
    cluster.add_argument("--pin", action="store_true", help="cluster: each worker on its own core (taskset -c K)")
    cluster.add_argument("--worker-capacity", type=int, help="cluster: sessions per worker (default: the top sweep level)")
    cluster.add_argument("--compare", metavar="WORKERS", nargs="?", const="1,2",
                         help="latency and sweep against serve, then a cluster of each worker count (default 1,2); "
                              "no WER phase")  # fmt: skip
    p.add_argument("--no-accuracy", action="store_true", help="skip the WER phase (streaming and offline)")
    p.add_argument("--levels", help="concurrency levels, e.g. 1,2,4,8,16")
    p.add_argument("--latency-clips", type=int, help="utterances in the latency session")
    p.add_argument("--sweep-clips", type=int, help="utterances per session in the sweep")
    p.add_argument("--accuracy-clips", type=int, help="corpus clips for WER (default: all; quick: 30)")
    p.add_argument("--longform", action="store_true",
                   help="only the accuracy phase, on the long-form set (prompts joined into 10-30 s utterances)")
    p.add_argument("--longform-sessions", type=int, help="long-form sessions for WER (default: all; quick: 2)")
    p.add_argument("--no-longform", action="store_true", help="no long-form set in the accuracy phase")
    p.add_argument("--no-offline", action="store_true", help="skip the offline reference transcription")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", help="the model the server runs: tiny.en, base or a CTranslate2 directory "
                   "(default ROOMSCRIBE_MODEL or tiny.en; recorded in the report)")
    soak = p.add_argument_group("soak (--soak): real-time sessions and idle sockets for minutes; RSS, losses, latency")
    soak.add_argument("--soak", action="store_true", help="run the soak instead of the bench")
    soak.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    soak.add_argument("--sessions", type=int, default=8, help="real-time sessions in the soak (default 8)")
    soak.add_argument("--idle-sockets", type=int, default=50, help="idle authenticated sockets in the soak (default 50)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    overrides: dict[str, Any] = {
        "transports": tuple(t.strip() for t in args.transport.split(",") if t.strip()),
        "server": args.server,
        "corpus_dir": Path(args.corpus).expanduser() if args.corpus else None,
        "build_corpus": not args.no_build,
        "examples_only": args.examples_only,
        "offline": not args.no_offline,
        "seed": args.seed,
        "topology": args.topology,
        "workers": args.workers,
        "pin": args.pin,
        "worker_capacity": args.worker_capacity,
        "accuracy": not args.no_accuracy,
        "longform": not args.no_longform,
        "longform_only": args.longform,
    }
    if args.levels:
        overrides["sweep_levels"] = tuple(int(x) for x in args.levels.split(",") if x.strip())
    for name in ("latency_clips", "sweep_clips", "accuracy_clips", "longform_sessions"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    return BenchConfig.quick(**overrides) if args.quick else BenchConfig(**overrides)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_start": round(os.getloadavg()[0], 2)}  # fmt: skip


def model_info() -> dict[str, Any]:
    """The model the bench's servers run (ROOMSCRIBE_MODEL / _PATH), resolved as they will (a split model is joined now)."""
    asr = Settings.from_env().asr
    info = prepare(asr)
    return {"name": info.name, "path": str(info.path), "multilingual": info.multilingual, "size_bytes": info.size_bytes,
            "compute_type": asr.compute_type, "beam_size": asr.beam_size, "language": asr.language}  # fmt: skip


def git_info() -> dict[str, Any]:
    """The commit measured, when the bench runs from a git checkout (None from an installed wheel)."""
    if not (SOURCE_ROOT / ".git").exists():
        return {"commit": None, "dirty": None}

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=SOURCE_ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def soak_main(args: argparse.Namespace, command: list[str]) -> int:
    """`roomscribe bench --soak`: print (and with --json write) the soak's figures."""
    from roomscribe.bench.soak import SoakConfig, render, run_soak

    if args.minutes <= 0 or args.sessions < 1 or args.idle_sockets < 0:
        print("error: --minutes must be > 0, --sessions >= 1, --idle-sockets >= 0", file=sys.stderr)
        return 2
    cfg = SoakConfig(minutes=args.minutes, sessions=args.sessions, idle_sockets=args.idle_sockets, server=args.server)
    machine, git = machine_info(), git_info()  # the code measured is the code at the start
    result = asyncio.run(run_soak(cfg, progress=lambda s: print(s, flush=True)))
    result = {"bench": "roomscribe-soak", "command": command, "machine": machine, "git": git, **result}
    print()
    print(render(result, " ".join(command)))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"JSON written to {args.json}")
    return 0


def cluster_problem(args: argparse.Namespace, cfg: BenchConfig) -> str | None:
    """Why these cluster options cannot run, or None."""
    if cfg.topology != "cluster" and not args.compare:
        return None
    if args.workers < 1 or (args.worker_capacity is not None and args.worker_capacity < 1):
        return "--workers and --worker-capacity must be >= 1"
    if cfg.transports != ("ws",):
        return "a cluster transcribes ws sessions only for now: use --transport ws"
    if args.server != "subprocess":
        return "a cluster's processes are always subprocesses: --server inprocess is for --topology serve"
    if args.compare and not all(x.strip().isdigit() and int(x) >= 1 for x in args.compare.split(",")):
        return f"--compare takes worker counts, e.g. 1,2; got {args.compare!r}"
    return None


def compare_main(args: argparse.Namespace, cfg: BenchConfig, command: list[str]) -> int:
    """`roomscribe bench --compare 1,2`: serve vs clusters; print (and with --json write) the table."""
    from roomscribe.bench.compare import render_compare, run_compare

    workers = [int(x) for x in args.compare.split(",")]
    machine, git = machine_info(), git_info()
    doc = asyncio.run(run_compare(cfg, workers, progress=lambda s: print(s, flush=True)))
    machine["loadavg_end"] = round(os.getloadavg()[0], 2)
    doc = {"bench": "roomscribe-compare", "format": 1, "command": command, "machine": machine, "git": git, **doc}
    print()
    print(f"{' '.join(command)} — {machine['cpus']} CPUs, load {machine['loadavg_start']} → {machine['loadavg_end']}")
    print(render_compare(doc, cfg.max_p95_final_s))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"JSON written to {args.json}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """The command; Ctrl-C (or SIGTERM) stops the bench and every process it started (status 130)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted: the bench's processes are stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_dotenv(".env", override=False)  # as `roomscribe serve` does; the environment wins
    if args.model:  # every server, worker and offline reference the bench starts reads it from the environment
        os.environ["ROOMSCRIBE_MODEL"] = args.model
        os.environ["ROOMSCRIBE_MODEL_PATH"] = ""
    try:
        model = model_info()
    except (ModelError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.soak:
        return soak_main(args, ["roomscribe", "bench", *(sys.argv[1:] if argv is None else argv)])
    cfg = config_from_args(args)
    unknown = set(cfg.transports) - set(TRANSPORTS)
    if unknown or not cfg.transports:
        print(f"error: --transport takes {', '.join(TRANSPORTS)}; got {args.transport!r}", file=sys.stderr)
        return 2
    if problem := cluster_problem(args, cfg):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.compare:
        return compare_main(args, cfg, ["roomscribe", "bench", *(sys.argv[1:] if argv is None else argv)])
    machine, git = machine_info(), git_info()
    try:
        result = asyncio.run(run_bench(cfg, progress=lambda s: print(s, flush=True)))
    except TransportUnavailable as exc:
        print(f"error: transport unavailable: {exc}", file=sys.stderr)
        return 2
    machine["loadavg_end"] = round(os.getloadavg()[0], 2)
    result = {"bench": "roomscribe", "format": 1, "command": ["roomscribe", "bench", *(argv or sys.argv[1:])],
              "machine": machine, "git": git, "model": model, **result}  # fmt: skip
    result["targets"] = target_rows(result)
    print()
    print(render(result))
    print(f"(took {result['duration_s'] / 60:.1f} min)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
