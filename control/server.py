"""Runs the control plane in-process: ASR engine, session manager and the aiohttp site."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.asr import AsrEngine
from agent.pipeline import TranscriptionPipeline
from agent.prompting import session_config
from control.app import create_app
from control.cluster_livekit import ClusterLiveKitTransport
from control.cluster_manager import ClusterSessionManager
from control.cluster_store import ClusterStore
from control.config import ConfigError, Settings
from control.livekit_media import LiveKitTransport
from control.media import MediaTransport
from control.recordings import Recordings
from control.session import SessionManager, SessionOptions
from control.ws_media import WsTransport

if TYPE_CHECKING:
    from roomscribe.devserver import DevServer

log = logging.getLogger(__name__)


class ControlServer:
    """The control server. Pass `engine` to share one loaded model between several servers.

    `settings` are the effective ones once started: with the embedded LiveKit development server
    and no LIVEKIT_API_KEY/SECRET they hold the random key pair made for this run.
    """

    def __init__(self, settings: Settings, *, engine: AsrEngine | None = None, cluster: ClusterStore | None = None) -> None:
        """With `cluster`, this is a control replica (`roomscribe control`): no model here, sessions
        in Redis, transcription on workers (LiveKit too when LIVEKIT_URL is set)."""
        self.settings = settings
        self.cluster = cluster
        self._own_engine = engine is None and cluster is None
        self._engine = engine if engine is not None or cluster is not None else AsrEngine(settings.asr)
        self.manager: SessionManager | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = settings.port
        self.devserver: DevServer | None = None
        self.livekit_url = settings.livekit_url
        #: The session recordings (`roomscribe serve`; a control replica records nothing).
        self.recordings: Recordings | None = None

    @property
    def engine(self) -> AsrEngine:
        """The model (not on a control replica, which has none)."""
        if self._engine is None:
            raise RuntimeError("a control replica has no model: its sessions are transcribed on workers")
        return self._engine

    def _new_pipeline(self, on_event, participant: str | None, options: SessionOptions) -> TranscriptionPipeline:
        config = session_config(self.settings.pipeline, keyterms=options.keyterms, prompt=options.prompt, words=options.words)
        config = dataclasses.replace(config, language=options.language, task=options.task)
        return TranscriptionPipeline(self.engine, config, on_event, participant=participant)

    async def start(self) -> None:
        self.settings.check_serving()  # ConfigError: weak secret, dev conveniences off loopback
        if self.cluster is not None and self.settings.record:
            raise ConfigError("ROOMSCRIBE_RECORD: a cluster does not record sessions (only `roomscribe serve` does)")
        if self._own_engine:
            await self.engine.start()
        if self.cluster is not None:
            await self._start_site(await self._cluster_manager(self.cluster))
            return
        transports: dict[str, MediaTransport] = {"ws": self._ws_transport()}
        if self.settings.livekit_enabled:
            transports["livekit"] = await self._start_livekit()
        self.recordings = Recordings.from_settings(self.settings)
        await self.recordings.start()
        languages = self.engine.languages  # what the loaded model can do: session.start is checked against it
        self.manager = SessionManager(
            pipeline_factory=self._new_pipeline, transports=transports, recordings=self.recordings, languages=languages,
            **self._session_settings(),
        )
        engine = self.engine
        self.manager.metrics.watch(engine_stats=lambda: engine.stats)
        await self._start_site(self.manager)

    async def _cluster_manager(self, store: ClusterStore) -> ClusterSessionManager:
        """A control replica's manager: sessions registered in Redis and run on workers; LiveKit
        sessions too when LIVEKIT_URL is set (a cluster starts no embedded dev server: run
        `roomscribe devserver` for development)."""
        transports: dict[str, MediaTransport] = {"ws": self._ws_transport()}
        if self.settings.livekit_url:
            transports["livekit"] = ClusterLiveKitTransport(self.settings, self.settings.livekit_url)
            log.info("LiveKit sessions join the LiveKit server at %s (from their workers)", self.settings.livekit_url)
        if self.settings.audio_transport not in transports:
            log.warning("cluster mode: LIVEKIT_URL is not set, so the default transport is ws")
            self.settings = dataclasses.replace(self.settings, audio_transport="ws")
        manager = ClusterSessionManager(store, transports=transports, **self._session_settings())
        await manager.start_keeper()
        self.manager = manager
        return manager

    def _session_settings(self) -> dict[str, Any]:
        """The session manager's settings, the same for `serve` and a control replica."""
        s = self.settings
        return {
            "grace_period_s": s.grace_period_s,
            "room_strategy": s.room_strategy,
            "room_prefix": s.room_prefix,
            "replay_limit": s.replay_limit,
            "finish_timeout_s": s.finish_timeout_s,
            "max_session_s": s.max_session_s,
        }

    def _ws_transport(self) -> WsTransport:
        return WsTransport(
            self.settings.max_frame_s,
            rate=self.settings.ws_audio_rate,
            burst_s=self.settings.ws_audio_burst_s,
            max_backlog_s=self.settings.ws_max_backlog_s,
        )

    async def _start_site(self, manager: SessionManager) -> None:
        app = create_app(self.settings, manager)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = self._site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # aiohttp exposes no public accessor
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("control plane listening on %s", self.url)

    async def _start_livekit(self) -> LiveKitTransport:
        """The LiveKit backend; with no LIVEKIT_URL, the embedded development server too."""
        if not self.settings.livekit_url:
            from roomscribe.devserver import DevServer

            if not (self.settings.livekit_api_key and self.settings.livekit_api_secret):
                # Never a fixed, published pair: anyone who could reach the server could use it.
                self.settings = dataclasses.replace(
                    self.settings,
                    livekit_api_key="dev-" + secrets.token_hex(4),
                    livekit_api_secret=secrets.token_urlsafe(32),
                )
            # Its own process, like a real LiveKit server: its media relay never competes with
            # this process's event loop or the model for the GIL.
            self.devserver = DevServer(
                host=self.settings.host,
                port=self.settings.devserver_port,
                keys={self.settings.livekit_api_key: self.settings.livekit_api_secret},
                own_process=True,
            )
            await self.devserver.start()
            self.livekit_url = self.devserver.url
            log.warning(
                "LIVEKIT_URL is not set: started the embedded LiveKit development server on %s "
                "(for development and tests only; set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
                "to use LiveKit Cloud or your own livekit-server)",
                self.livekit_url,
            )
        else:
            log.info("using the LiveKit server at %s", self.livekit_url)
        return LiveKitTransport(self.settings, self.livekit_url)

    @property
    def url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}/v1/control"

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def stop(self) -> None:
        """Stop taking connections, end (or, on a control replica, let go of) every session, then
        close the sockets."""
        if self._site is not None:
            await self._site.stop()  # no new socket while the sessions wind down (a client would reconnect)
            self._site = None
        if self.manager is not None:
            await self.manager.close()
        if self.recordings is not None:
            await self.recordings.close()
            self.recordings = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.devserver is not None:
            await self.devserver.stop()
            self.devserver = None
        if self._own_engine:
            await self.engine.close()
