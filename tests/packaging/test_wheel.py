"""The wheel works outside the repository.

Builds the wheel from a copy of the source tree (offline: `--no-build-isolation --no-index`),
checks what it contains, installs it into a fresh virtual environment that reuses `.venv`'s
already-installed dependencies (a `.pth` file; the editable install's finder is not loaded, so the
repository is not importable) and runs the installed `roomscribe` from a directory outside the
repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from speech_samples import JFK_TEXT, printed_finals_text, wer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "control", "tokens", "roomscribe")  # the only top-level names a wheel may install
LIVEKIT_CLIENT = ROOT / "node_modules" / "livekit-client"
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "*.egg-info", "__pycache__",
                                    ".pytest_cache", "artifacts", "bench-results", ".env")


@dataclass(frozen=True)
class Installed:
    """A wheel and the fresh environment it is installed in."""

    wheel: Path
    env: Path
    workdir: Path  # outside the repository; the commands run here

    @property
    def python(self) -> Path:
        return self.env / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return Path(sysconfig.get_path("purelib", vars={"base": str(self.env), "platbase": str(self.env)}))

    def run(self, *args: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a command of the environment (`roomscribe`, `python`) in `workdir`, without the
        caller's PYTHONPATH and roomscribe/LiveKit settings."""
        env = {k: v for k, v in os.environ.items()
               if k != "PYTHONPATH" and not k.startswith(("LIVEKIT_", "ROOMSCRIBE_"))}
        env["OPENBLAS_NUM_THREADS"] = "1"
        return subprocess.run([str(self.env / "bin" / args[0]), *map(str, args[1:])], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=self.workdir, check=False)


def _copy_source(target: Path) -> None:
    """The source tree as a fresh clone has it, plus the livekit-client bundle (`npm ci`) if present."""
    shutil.copytree(ROOT, target, ignore=NOT_SOURCE)
    if LIVEKIT_CLIENT.is_dir():
        shutil.copytree(LIVEKIT_CLIENT, target / "node_modules" / "livekit-client", ignore=NOT_SOURCE)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    assert not base.is_relative_to(ROOT)
    source, dist, env, workdir = base / "source", base / "dist", base / "env", base / "work"
    _copy_source(source)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--wheel-dir", str(dist), str(source)], capture_output=True, text=True, timeout=240, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("roomscribe-*.whl")

    venv.EnvBuilder(with_pip=False).create(env)
    workdir.mkdir()
    result = Installed(wheel, env, workdir)
    # The dependencies come from .venv (nothing is downloaded); the wheel itself is installed first on the path.
    result.site_packages.joinpath("roomscribe-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(result.python), "install", "--no-deps",
                              "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=120, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    yield result


@pytest.mark.timeout(300)
def test_wheel_has_only_the_package_names_and_no_test_support(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == set(PACKAGES)  # no `client`, `bench`, `devserver`, `examples`, `tests`
    assert "roomscribe/devserver/testing.py" not in names
    assert not [name for name in names if "/tests/" in name or name.startswith("tests/")]

    source_modules = {path.relative_to(ROOT).as_posix() for package in PACKAGES
                      for path in (ROOT / package).rglob("*.py") if "__pycache__" not in path.parts}
    example_modules = {f"roomscribe/examples/{path.name}" for path in (ROOT / "examples").glob("*.py")}
    assert source_modules | example_modules <= names, "a package is missing from pyproject.toml's `packages`"

    data = {f"roomscribe/examples/{path.relative_to(ROOT / 'examples').as_posix()}"
            for path in [*(ROOT / "examples" / "audio").glob("*.wav"), *(ROOT / "examples" / "web").glob("*.*")]
            if path.suffix != ".md"}
    assert {"roomscribe/examples/audio/jfk.wav", "roomscribe/examples/web/index.html"} <= data <= names
    assert "control/default_commands.toml" in names  # the voice commands every session has by default
    if (LIVEKIT_CLIENT / "dist" / "livekit-client.umd.js").is_file():
        assert {"roomscribe/vendor/livekit-client/livekit-client.umd.js",
                "roomscribe/vendor/livekit-client/LICENSE"} <= names


@pytest.mark.timeout(300)
def test_installed_code_and_data_come_from_the_environment_not_the_repo(installed: Installed) -> None:
    script = textwrap.dedent("""
        import agent, control, roomscribe, tokens
        from roomscribe.common import package_data
        for found in (agent.__file__, control.__file__, roomscribe.__file__, tokens.__file__,
                      package_data.sample_audio(), package_data.web_dir() / "index.html",
                      package_data.livekit_client_dir()):
            print(found)
    """)
    out = installed.run("python", "-c", script, timeout=60)
    assert out.returncode == 0, out.stderr
    found = out.stdout.split()
    bundled = (LIVEKIT_CLIENT / "dist" / "livekit-client.umd.js").is_file()
    assert len(found) == 7 and (found[6] != "None") == bundled, found
    for path in found[: 7 if bundled else 6]:
        assert Path(path).is_relative_to(installed.site_packages), path
        assert Path(path).exists(), path


def _assert_demo_transcribed_jfk(out: subprocess.CompletedProcess[str], installed: Installed) -> None:
    """The demo streamed the installed copy of the sample and printed its transcript."""
    assert out.returncode == 0, out.stdout + out.stderr
    streamed = Path(out.stdout.split("Streaming ", 1)[1].split(" via ", 1)[0])
    assert streamed == installed.site_packages / "roomscribe" / "examples" / "audio" / "jfk.wav", out.stdout
    assert wer(JFK_TEXT, printed_finals_text(out.stdout)) <= 0.10, out.stdout
    assert "session ended (stopped)" in out.stdout


@pytest.mark.timeout(300)
def test_installed_demo_over_ws(installed: Installed) -> None:
    out = installed.run("roomscribe", "--env-file", installed.workdir / "absent.env", "demo", "--transport", "ws",
                        "--fast", timeout=180)
    _assert_demo_transcribed_jfk(out, installed)


@pytest.mark.timeout(300)
def test_installed_demo_over_livekit(installed: Installed) -> None:
    """The default demo: the dev server runs as a child process (`python -m roomscribe.devserver`),
    which must import the installed package without any PYTHONPATH from the parent."""
    out = installed.run("roomscribe", "--env-file", installed.workdir / "absent.env", "demo", timeout=180)
    _assert_demo_transcribed_jfk(out, installed)
    assert "embedded LiveKit development server" in out.stderr


@pytest.mark.timeout(300)
def test_installed_server_serves_the_web_example(installed: Installed) -> None:
    """The page's files (and the SDK bundle, when the wheel has it) are served from the installed package."""
    script = textwrap.dedent("""
        import asyncio
        import aiohttp
        from aiohttp import web
        from control.web import add_web_routes

        async def main():
            app = web.Application()
            add_web_routes(app, secret="not-used", dev_mode=False)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as http:
                page = ("/", "/web/app.js", "/web/protocol.js", "/web/audio-worklet.js")
                for path in (*page, "/vendor/livekit-client/livekit-client.umd.js"):
                    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                        print(path, response.status, len(await response.read()))
            await runner.cleanup()

        asyncio.run(main())
    """)
    out = installed.run("python", "-c", script, timeout=60)
    assert out.returncode == 0, out.stderr
    served = {path: (int(status), int(size)) for path, status, size in (line.split() for line in out.stdout.splitlines())}
    for path in ("/", "/web/app.js", "/web/protocol.js", "/web/audio-worklet.js"):
        assert served[path][0] == 200 and served[path][1] > 0, served
    bundled = (LIVEKIT_CLIENT / "dist" / "livekit-client.umd.js").is_file()
    assert served["/vendor/livekit-client/livekit-client.umd.js"][0] == (200 if bundled else 404), served
