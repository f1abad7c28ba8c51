"""Settings from the environment (and `.env`, read by the CLI with python-dotenv).

Every setting is listed, with its default, in `.env.example`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.config import AsrConfig, PipelineConfig
from agent.prompting import DecoderPrompt, PromptError, check_prompt, token_counter
from control.commands import CommandError, CommandSet, default_commands, server_commands
from roomscribe.common.audio import CLIENT_AUDIO_BUFFER_S
from roomscribe.common.languages import LANGUAGE_CHOICES
from roomscribe.common.net import is_loopback
from tokens.control_secret import WeakSecretError, check_control_secret

ALLOW_REMOTE_DEV_ENV = "ROOMSCRIBE_ALLOW_REMOTE_DEV"
#: The longest ROOMSCRIBE_ROOM_PREFIX: room names then stay within 128 characters (control/rooms.py).
MAX_ROOM_PREFIX = 32


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _get(env, name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    """A whole number, or None for "auto" (or unset)."""
    if _get(env, name, "auto").lower() == "auto":
        return None
    return _int(env, name, 0)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "1" if default else "0").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _get(env, name, default).lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def _language(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _get(env, name, default).lower() or default
    if raw not in LANGUAGE_CHOICES:
        raise ConfigError(f'{name} must be "auto" or a Whisper language code (en, de, fr, …); got {raw!r}')
    return raw
def _commands(setting: str) -> CommandSet:
    try:
        return server_commands(setting)
    except CommandError as error:
        raise ConfigError(f"ROOMSCRIBE_COMMANDS_FILE: {error}") from None


@dataclass
class Settings:
    """Everything the control plane and the in-process agent need."""

    host: str = "127.0.0.1"
    port: int = 8080
    control_secret: str = ""
    dev_mode: bool = False
    # Dev mode and the embedded dev server on a non-loopback host: refused unless this is set.
    allow_remote_dev: bool = False
    serve_web: bool = False  # serve the web example at / outside dev mode
    # LiveKit: an empty URL means "start the embedded development server", which gets a random
    # key pair per run unless both the key and the secret are set.
    livekit_url: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    audio_transport: str = "livekit"  # default transport: "livekit" | "ws"
    allow_ws_fallback: bool = True  # a client may ask for "ws" per session
    client_token_ttl_s: int = 300
    agent_token_ttl_s: int = 600
    room_strategy: str = "user"  # "user" | "user_timestamp"
    room_prefix: str = "roomscribe-"
    grace_period_s: float = 30.0
    # A session that ends (any reason) first finalises its open utterances, for at most this long.
    finish_timeout_s: float = 60.0
    # Control tokens: accepted up to this long past `exp` (clock skew); a live socket is told
    # `auth.expiring` this long before `exp` (at most half the token's remaining life), and is
    # closed (4001) this long after `auth.expired` unless it sent a fresh token (`auth.refresh`).
    control_token_leeway_s: float = 5.0
    auth_expiring_s: float = 60.0
    auth_expired_grace_s: float = 10.0
    publish_gating: str = "always"  # "always" | "vad"
    publish_hangover_s: float = 0.6  # after the client's `vad speaking:false`, before publish.stop
    publish_inactivity_s: float = 10.0  # no speech while publishing → publish.stop {reason: inactivity}
    publish_transcripts: bool = False  # also send transcripts into the room on lk.transcription
    devserver_port: int = 7880  # the embedded LiveKit dev server (when LIVEKIT_URL is empty)
    debug_audio_dir: str = ""  # write the audio the agent receives from LiveKit to WAV files here
    max_frame_s: float = 1.0
    send_queue_limit: int = 512
    replay_limit: int = 2000
    # ws audio metering (control/audio_meter.py): a session may send `ws_audio_burst_s` of audio at
    # once, then at most `ws_audio_rate`× real time (0: unmetered); faster audio waits (backpressure).
    ws_audio_rate: float = 1.5
    ws_audio_burst_s: float = CLIENT_AUDIO_BUFFER_S
    # A ws session's audio also waits while its finals queued for the model hold more audio than this (0: off).
    ws_max_backlog_s: float = 15.0
    # Admission control (control/admission.py); 0: no cap. max_sessions None: derived from capacity.
    max_sessions: int | None = None
    max_sockets: int = 500
    max_sockets_per_user: int = 8
    max_subscriptions_per_socket: int = 100
    start_timeout_s: float = 30.0  # connect → session.start (or subscribe)
    max_session_s: float = 0.0
    # The cluster (docs/deploy.md): the Redis both roles use, and the sessions one worker takes
    # (None: SESSIONS_PER_CORE × its usable cores, as for ROOMSCRIBE_MAX_SESSIONS).
    redis_url: str = ""
    worker_capacity: int | None = None
    worker_health_port: int = 0  # `roomscribe worker`'s GET /healthz on ROOMSCRIBE_HOST (0: off)
    # Session recording (control/recording.py): every session (`record`), or those that ask with a
    # token that has the `record` claim; where ("": the user's data dir), and for how long (0: forever).
    record: bool = False
    recordings_dir: str = ""
    recordings_retention_days: float = 30.0
    asr: AsrConfig = field(default_factory=AsrConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    # Voice commands (control/commands.py): ROOMSCRIBE_COMMANDS_FILE, read once at start; empty: the
    # defaults that ship with the package, "off": none. A session's own `commands` replace them.
    commands_file: str = ""
    commands: CommandSet = field(default_factory=default_commands)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (default: os.environ); raise ConfigError on a bad value."""
        env = os.environ if env is None else env
        d = cls()
        asr = AsrConfig(
            model_path=_get(env, "ROOMSCRIBE_MODEL_PATH", "") or None,
            model=_get(env, "ROOMSCRIBE_MODEL", d.asr.model) or d.asr.model,
            language=_language(env, "ROOMSCRIBE_LANGUAGE", d.asr.language),
            compute_type=_get(env, "ROOMSCRIBE_COMPUTE_TYPE", d.asr.compute_type),
            beam_size=_int(env, "ROOMSCRIBE_BEAM_SIZE", d.asr.beam_size),
            cpu_threads=_int(env, "ROOMSCRIBE_CPU_THREADS", d.asr.cpu_threads),
            nice=_int(env, "ROOMSCRIBE_ASR_NICE", d.asr.nice),
        )
        pipeline = PipelineConfig(
            interims=_bool(env, "ROOMSCRIBE_INTERIMS", d.pipeline.interims),
            interim_interval_s=_float(env, "ROOMSCRIBE_INTERIM_INTERVAL_S", d.pipeline.interim_interval_s),
            silence_hangover_s=_float(env, "ROOMSCRIBE_SILENCE_HANGOVER_S", d.pipeline.silence_hangover_s),
            max_utterance_s=_float(env, "ROOMSCRIBE_MAX_UTTERANCE_S", d.pipeline.max_utterance_s),
            vad_threshold=_float(env, "ROOMSCRIBE_VAD_THRESHOLD", d.pipeline.vad_threshold),
            word_timestamps=_bool(env, "ROOMSCRIBE_WORDS", d.pipeline.word_timestamps),
            keyterms=tuple(t.strip() for t in _get(env, "ROOMSCRIBE_KEYTERMS", "").split(",") if t.strip()),
            prompt=_get(env, "ROOMSCRIBE_PROMPT", d.pipeline.prompt),
            final_context_chars=_int(env, "ROOMSCRIBE_FINAL_CONTEXT_CHARS", d.pipeline.final_context_chars),
            max_cut_lookback_s=_float(env, "ROOMSCRIBE_MAX_CUT_LOOKBACK_S", d.pipeline.max_cut_lookback_s),
            max_cut_rule=_choice(env, "ROOMSCRIBE_MAX_CUT_RULE", d.pipeline.max_cut_rule, ("quietest", "longest_pause")),
        )
        settings = cls(
            host=_get(env, "ROOMSCRIBE_HOST", d.host),
            port=_int(env, "ROOMSCRIBE_PORT", d.port),
            control_secret=_get(env, "ROOMSCRIBE_CONTROL_SECRET", ""),
            dev_mode=_bool(env, "ROOMSCRIBE_DEV_MODE", d.dev_mode),
            allow_remote_dev=_bool(env, ALLOW_REMOTE_DEV_ENV, d.allow_remote_dev),
            serve_web=_bool(env, "ROOMSCRIBE_SERVE_WEB", d.serve_web),
            livekit_url=_get(env, "LIVEKIT_URL", ""),
            livekit_api_key=_get(env, "LIVEKIT_API_KEY", d.livekit_api_key),
            livekit_api_secret=_get(env, "LIVEKIT_API_SECRET", d.livekit_api_secret),
            audio_transport=_choice(env, "ROOMSCRIBE_AUDIO_TRANSPORT", d.audio_transport, ("ws", "livekit")),
            allow_ws_fallback=_bool(env, "ROOMSCRIBE_ALLOW_WS_FALLBACK", d.allow_ws_fallback),
            client_token_ttl_s=_int(env, "ROOMSCRIBE_CLIENT_TOKEN_TTL_S", d.client_token_ttl_s),
            agent_token_ttl_s=_int(env, "ROOMSCRIBE_AGENT_TOKEN_TTL_S", d.agent_token_ttl_s),
            room_strategy=_choice(env, "ROOMSCRIBE_ROOM_STRATEGY", d.room_strategy, ("user", "user_timestamp")),
            room_prefix=_get(env, "ROOMSCRIBE_ROOM_PREFIX", d.room_prefix),
            grace_period_s=_float(env, "ROOMSCRIBE_GRACE_PERIOD_S", d.grace_period_s),
            finish_timeout_s=_float(env, "ROOMSCRIBE_FINISH_TIMEOUT_S", d.finish_timeout_s),
            control_token_leeway_s=_float(env, "ROOMSCRIBE_CONTROL_TOKEN_LEEWAY_S", d.control_token_leeway_s),
            auth_expiring_s=_float(env, "ROOMSCRIBE_AUTH_EXPIRING_S", d.auth_expiring_s),
            auth_expired_grace_s=_float(env, "ROOMSCRIBE_AUTH_EXPIRED_GRACE_S", d.auth_expired_grace_s),
            publish_gating=_choice(env, "ROOMSCRIBE_PUBLISH_GATING", d.publish_gating, ("always", "vad")),
            publish_hangover_s=_float(env, "ROOMSCRIBE_PUBLISH_HANGOVER_S", d.publish_hangover_s),
            publish_inactivity_s=_float(env, "ROOMSCRIBE_PUBLISH_INACTIVITY_S", d.publish_inactivity_s),
            devserver_port=_int(env, "ROOMSCRIBE_DEVSERVER_PORT", d.devserver_port),
            publish_transcripts=_bool(env, "ROOMSCRIBE_PUBLISH_TRANSCRIPTS", d.publish_transcripts),
            debug_audio_dir=_get(env, "ROOMSCRIBE_DEBUG_AUDIO_DIR", d.debug_audio_dir),
            ws_audio_rate=_float(env, "ROOMSCRIBE_WS_AUDIO_RATE", d.ws_audio_rate),
            ws_audio_burst_s=_float(env, "ROOMSCRIBE_WS_AUDIO_BURST_S", d.ws_audio_burst_s),
            ws_max_backlog_s=_float(env, "ROOMSCRIBE_WS_MAX_BACKLOG_S", d.ws_max_backlog_s),
            max_sessions=_optional_int(env, "ROOMSCRIBE_MAX_SESSIONS"),
            max_sockets=_int(env, "ROOMSCRIBE_MAX_SOCKETS", d.max_sockets),
            max_sockets_per_user=_int(env, "ROOMSCRIBE_MAX_SOCKETS_PER_USER", d.max_sockets_per_user),
            max_subscriptions_per_socket=_int(
                env, "ROOMSCRIBE_MAX_SUBSCRIPTIONS_PER_SOCKET", d.max_subscriptions_per_socket
            ),
            start_timeout_s=_float(env, "ROOMSCRIBE_START_TIMEOUT_S", d.start_timeout_s),
            max_session_s=_float(env, "ROOMSCRIBE_MAX_SESSION_S", d.max_session_s),
            redis_url=_get(env, "ROOMSCRIBE_REDIS_URL", d.redis_url),
            worker_capacity=_optional_int(env, "ROOMSCRIBE_WORKER_CAPACITY"),
            worker_health_port=_int(env, "ROOMSCRIBE_WORKER_HEALTH_PORT", d.worker_health_port),
            record=_bool(env, "ROOMSCRIBE_RECORD", d.record),
            recordings_dir=_get(env, "ROOMSCRIBE_RECORDINGS_DIR", d.recordings_dir),
            recordings_retention_days=_float(env, "ROOMSCRIBE_RECORDINGS_RETENTION_DAYS", d.recordings_retention_days),
            asr=asr,
            pipeline=pipeline,
            commands_file=_get(env, "ROOMSCRIBE_COMMANDS_FILE", d.commands_file),
            commands=_commands(_get(env, "ROOMSCRIBE_COMMANDS_FILE", d.commands_file)),
        )
        settings.validate()
        return settings

    @property
    def livekit_enabled(self) -> bool:
        """LiveKit sessions are offered when it is the default transport or a server is configured."""
        return self.audio_transport == "livekit" or bool(self.livekit_url)

    def validate(self) -> None:
        """Refuse settings that cannot work, with a message that says which one."""
        if len(self.room_prefix) > MAX_ROOM_PREFIX:
            raise ConfigError(f"ROOMSCRIBE_ROOM_PREFIX may have at most {MAX_ROOM_PREFIX} characters (room names stay short)")
        if self.livekit_url and not (self.livekit_api_key and self.livekit_api_secret):
            raise ConfigError("LIVEKIT_URL is set: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET for that server too")
        if bool(self.livekit_api_key) != bool(self.livekit_api_secret):
            raise ConfigError("set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or neither")
        if self.client_token_ttl_s < 60:
            raise ConfigError("ROOMSCRIBE_CLIENT_TOKEN_TTL_S must be at least 60 seconds")
        if self.grace_period_s < 0:
            raise ConfigError("ROOMSCRIBE_GRACE_PERIOD_S must not be negative")
        for name, value in (
            ("ROOMSCRIBE_WS_AUDIO_RATE", self.ws_audio_rate),
            ("ROOMSCRIBE_WS_AUDIO_BURST_S", self.ws_audio_burst_s),
            ("ROOMSCRIBE_WS_MAX_BACKLOG_S", self.ws_max_backlog_s),
            ("ROOMSCRIBE_MAX_SESSIONS", self.max_sessions or 0),
            ("ROOMSCRIBE_MAX_SOCKETS", self.max_sockets),
            ("ROOMSCRIBE_MAX_SOCKETS_PER_USER", self.max_sockets_per_user),
            ("ROOMSCRIBE_MAX_SUBSCRIPTIONS_PER_SOCKET", self.max_subscriptions_per_socket),
            ("ROOMSCRIBE_START_TIMEOUT_S", self.start_timeout_s),
            ("ROOMSCRIBE_MAX_SESSION_S", self.max_session_s),
            ("ROOMSCRIBE_RECORDINGS_RETENTION_DAYS", self.recordings_retention_days),
        ):
            if value < 0:
                raise ConfigError(f"{name} must not be negative (0 turns it off)")
        for name, value in (
            ("ROOMSCRIBE_FINISH_TIMEOUT_S", self.finish_timeout_s),
            ("ROOMSCRIBE_CONTROL_TOKEN_LEEWAY_S", self.control_token_leeway_s),
            ("ROOMSCRIBE_AUTH_EXPIRING_S", self.auth_expiring_s),
            ("ROOMSCRIBE_AUTH_EXPIRED_GRACE_S", self.auth_expired_grace_s),
        ):
            if value < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.worker_capacity is not None and self.worker_capacity < 1:
            raise ConfigError("ROOMSCRIBE_WORKER_CAPACITY must be at least 1 (or auto)")
        if not 0 <= self.worker_health_port <= 65535:
            raise ConfigError("ROOMSCRIBE_WORKER_HEALTH_PORT must be a port number (0: no health endpoint)")
        if 0 < self.ws_audio_rate < 1:
            raise ConfigError("ROOMSCRIBE_WS_AUDIO_RATE must be at least 1 (real time), or 0 to turn metering off")
        self._validate_prompt()

    def _validate_prompt(self) -> None:
        """ROOMSCRIBE_KEYTERMS and ROOMSCRIBE_PROMPT within the bounds a session's are held to."""
        prompt = DecoderPrompt(self.pipeline.keyterms, self.pipeline.prompt)
        if not prompt:
            return
        try:
            check_prompt(prompt, token_counter(self.asr.model_path or self.asr.model))
        except PromptError as error:
            raise ConfigError(f"ROOMSCRIBE_KEYTERMS / ROOMSCRIBE_PROMPT: {error}") from None

    @property
    def embedded_devserver(self) -> bool:
        """Does the server start the embedded LiveKit development server (LiveKit on, no LIVEKIT_URL)?"""
        return self.livekit_enabled and not self.livekit_url

    def check_serving(self) -> None:
        """Refuse to serve what must not face a network, with a message that says what to do.

        A control secret that is missing, the `.env.example` placeholder or under 32 bytes; dev mode
        (`/dev/token` mints tokens for anyone) or the embedded LiveKit development server on a
        non-loopback host, unless ROOMSCRIBE_ALLOW_REMOTE_DEV is set.
        """
        try:
            check_control_secret(self.control_secret)
        except WeakSecretError as error:
            raise ConfigError(str(error)) from None
        if is_loopback(self.host) or self.allow_remote_dev:
            return
        exposed = [
            (what, fix)
            for what, fix, on in (
                ("dev mode (its /dev/token hands a control token for any user to anyone who asks)",
                 "ROOMSCRIBE_DEV_MODE=false", self.dev_mode),
                ("the embedded LiveKit development server (LIVEKIT_URL is empty)",
                 "LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET for a real LiveKit server",
                 self.embedded_devserver),
            )
            if on
        ]
        if exposed:
            raise ConfigError(
                f"the listen address {self.host!r} (ROOMSCRIBE_HOST) is not a loopback address, and "
                f"{' and '.join(what for what, _ in exposed)} must stay on this machine: listen on 127.0.0.1, "
                f"or set {' and '.join(fix for _, fix in exposed)}, or set {ALLOW_REMOTE_DEV_ENV}=true "
                f"to expose them anyway (never in production)"
            )
