"""Weak control secrets and dev conveniences off loopback are refused at start-up, with a message
that says what to do; `roomscribe secret` makes a secret a server accepts; the embedded dev server
never uses a fixed key pair."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from livekit import api

from control.config import ConfigError, Settings
from control.server import ControlServer
from control_harness import make_settings, serving, start_livekit_control
from roomscribe.common.net import is_loopback
from roomscribe.devserver.cli import main as devserver_main
from tokens import mint_control_token
from tokens.control_secret import PLACEHOLDER_CONTROL_SECRET, check_control_secret, new_control_secret

#: The key pair every earlier version gave the embedded dev server (it is in the public source).
OLD_FIXED_PAIR = ("devkey", "roomscribe-dev-secret-not-for-production")

WEAK_SECRETS = {
    "placeholder": (PLACEHOLDER_CONTROL_SECRET, "placeholder"),
    "one character": ("Z", "too short"),
    "31 bytes": ("0123456789abcdefghijklmnopqrstu", "too short"),
    "pattern": ("x" * 40, "pattern"),
}


def run_cli(*args: str, tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """`python -m roomscribe.cli ARGS` with only `env_vars` of our settings (no .env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ROOMSCRIBE_"))}
    return subprocess.run(
        [sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "absent.env"), *args],
        capture_output=True, text=True, timeout=120, env={**env, **env_vars}, cwd=tmp_path, check=False,
    )


@pytest.mark.parametrize("secret, problem", WEAK_SECRETS.values(), ids=WEAK_SECRETS.keys())
def test_weak_secrets_are_refused_with_how_to_make_one(secret: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        check_control_secret(secret)
    message = str(info.value)
    assert problem in message and "roomscribe secret" in message and "secrets.token_urlsafe(32)" in message
    assert secret not in message


@pytest.mark.parametrize("secret, problem", WEAK_SECRETS.values(), ids=WEAK_SECRETS.keys())
async def test_the_control_server_does_not_start_with_a_weak_secret(secret: str, problem: str) -> None:
    server = ControlServer(make_settings(control_secret=secret))
    with pytest.raises(ConfigError, match=problem):
        await server.start()
    assert server.manager is None  # refused before the model, the dev server or the socket


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["placeholder", "one character"])
def test_serve_refuses_a_weak_secret_and_says_how_to_generate_one(name: str, tmp_path: Path) -> None:
    secret, problem = WEAK_SECRETS[name]
    out = run_cli("serve", "--port", "0", tmp_path=tmp_path, ROOMSCRIBE_CONTROL_SECRET=secret,
                  ROOMSCRIBE_AUDIO_TRANSPORT="ws")
    assert out.returncode == 2, out.stdout + out.stderr
    assert problem in out.stderr and "roomscribe secret" in out.stderr
    assert "Traceback" not in out.stderr
    assert secret not in out.stdout + out.stderr


@pytest.mark.timeout(120)
def test_serve_refuses_the_env_example_file_as_copied(tmp_path: Path) -> None:
    """The README's first step copies .env.example: the server must say the secret is to be replaced."""
    example = Path(__file__).resolve().parents[2] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ROOMSCRIBE_"))}
    out = subprocess.run([sys.executable, "-m", "roomscribe.cli", "serve"], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "placeholder" in out.stderr and "roomscribe secret" in out.stderr


@pytest.mark.timeout(120)
def test_token_refuses_to_mint_with_a_weak_secret(tmp_path: Path) -> None:
    out = run_cli("token", "--user", "alice", tmp_path=tmp_path, ROOMSCRIBE_CONTROL_SECRET=PLACEHOLDER_CONTROL_SECRET)
    assert out.returncode == 2 and not out.stdout
    assert "placeholder" in out.stderr and "roomscribe secret" in out.stderr


@pytest.mark.timeout(120)
async def test_roomscribe_secret_prints_a_secret_a_server_accepts(engine, tmp_path: Path) -> None:
    first, second = (run_cli("secret", tmp_path=tmp_path) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    secret = first.stdout.strip()
    assert first.stdout == secret + "\n"  # only the secret: `roomscribe secret >> .env` style use
    assert secret != second.stdout.strip()
    assert len(secret.encode()) >= 32
    check_control_secret(secret)
    async with serving(engine, control_secret=secret) as control:
        client = await control.connect("alice", token=mint_control_token(secret, "alice"))
        assert client.events[0]["user"] == "alice"
        await client.close()
    assert new_control_secret() != new_control_secret()


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.10", False), ("example.com", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


EXPOSED = {
    "dev mode": ({"dev_mode": True, "audio_transport": "ws"}, "dev mode"),
    "embedded dev server": ({"audio_transport": "livekit"}, "embedded LiveKit development server"),
}


@pytest.mark.parametrize("overrides, what", EXPOSED.values(), ids=EXPOSED.keys())
async def test_dev_conveniences_on_a_non_loopback_host_are_refused(overrides: dict[str, object], what: str) -> None:
    server = ControlServer(make_settings(host="0.0.0.0", **overrides))
    with pytest.raises(ConfigError) as info:
        await server.start()
    assert what in str(info.value) and "ROOMSCRIBE_ALLOW_REMOTE_DEV=true" in str(info.value)
    assert server.manager is None
    # Explicitly overridden, the check passes (the server is not started here: it would face the network).
    make_settings(host="0.0.0.0", allow_remote_dev=True, **overrides).check_serving()
    # Neither dev mode nor the embedded dev server: any host will do.
    make_settings(host="0.0.0.0", audio_transport="ws").check_serving()
    make_settings(host="0.0.0.0", livekit_url="wss://lk.example", livekit_api_key="k",
                  livekit_api_secret="s" * 32).check_serving()


@pytest.mark.timeout(120)
def test_serve_in_dev_mode_on_a_non_loopback_host_needs_the_override(tmp_path: Path) -> None:
    out = run_cli("serve", tmp_path=tmp_path, ROOMSCRIBE_CONTROL_SECRET=new_control_secret(),
                  ROOMSCRIBE_HOST="0.0.0.0", ROOMSCRIBE_PORT="0", ROOMSCRIBE_DEV_MODE="true",
                  ROOMSCRIBE_AUDIO_TRANSPORT="ws")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "not a loopback address" in out.stderr and "ROOMSCRIBE_ALLOW_REMOTE_DEV=true" in out.stderr
    assert "Traceback" not in out.stderr


def test_allow_remote_dev_is_read_from_the_environment() -> None:
    assert Settings.from_env({"ROOMSCRIBE_ALLOW_REMOTE_DEV": "true"}).allow_remote_dev is True
    assert Settings.from_env({}).allow_remote_dev is False


def test_devserver_on_a_non_loopback_host_needs_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert devserver_main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_livekit_key_and_secret_come_together() -> None:
    with pytest.raises(ConfigError, match="LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        Settings.from_env({"LIVEKIT_API_KEY": "mykey"})
    with pytest.raises(ConfigError, match="LIVEKIT_URL is set"):
        Settings.from_env({"LIVEKIT_URL": "wss://lk.example"})


@pytest.mark.timeout(120)
async def test_the_embedded_dev_server_gets_a_random_key_pair_per_run(engine) -> None:
    servers = [await start_livekit_control(engine) for _ in range(2)]
    try:
        pairs = [(s.settings.livekit_api_key, s.settings.livekit_api_secret) for s in servers]
        assert pairs[0] != pairs[1] and OLD_FIXED_PAIR not in pairs
        for server, (key, secret) in zip(servers, pairs, strict=True):
            assert len(secret.encode()) >= 32
            assert server.devserver is not None and server.devserver.keys == {key: secret}
        devserver = servers[0].devserver
        assert devserver is not None
        url = devserver.http_url
        async with api.LiveKitAPI(url, *pairs[0]) as lk:
            await lk.room.list_rooms(api.ListRoomsRequest())
        async with api.LiveKitAPI(url, *OLD_FIXED_PAIR) as lk:
            with pytest.raises(api.TwirpError):
                await lk.room.list_rooms(api.ListRoomsRequest())
    finally:
        for server in servers:
            await server.stop()


@pytest.mark.timeout(120)
async def test_the_embedded_dev_server_uses_the_key_pair_the_user_set(engine) -> None:
    pair = ("my-dev-key", new_control_secret())
    server = await start_livekit_control(engine, livekit_api_key=pair[0], livekit_api_secret=pair[1])
    try:
        assert (server.settings.livekit_api_key, server.settings.livekit_api_secret) == pair
        assert server.devserver is not None and server.devserver.keys == dict([pair])
    finally:
        await server.stop()
