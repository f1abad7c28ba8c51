"""Data files that ship inside the package, found with `importlib.resources`.

`examples/` stays at the top of the repository; pyproject.toml installs it as the package
`roomscribe.examples`, so an editable install (which reads the checkout in place) and a wheel find
the sample recordings and the web example at the same place. The livekit-client browser bundle
comes from `node_modules` (`npm ci`): a wheel built after `npm ci` carries a copy (setup.py), a
checkout serves it from `node_modules` directly.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

EXAMPLES_PACKAGE = "roomscribe.examples"
LIVEKIT_CLIENT_BUNDLE = "livekit-client.umd.js"


def _package_dir(package: str) -> Path:
    """The directory of an installed package (plain files: roomscribe is never run from a zip)."""
    root = files(package)
    if isinstance(root, Path):
        return root
    raise RuntimeError(f"{package} must be installed as plain files, not inside an archive ({root!r})")


def examples_dir() -> Path:
    """`examples/` of the checkout, or `roomscribe/examples/` of an installed wheel."""
    return _package_dir(EXAMPLES_PACKAGE)


def sample_audio_dir() -> Path:
    """The bundled recordings (16 kHz mono PCM16 WAV): `jfk.wav`, `libri_61-70968-0000.wav`."""
    return examples_dir() / "audio"


def sample_audio(name: str = "jfk.wav") -> Path:
    """One bundled recording; `jfk.wav` is the demo's sample."""
    return sample_audio_dir() / name


def web_dir() -> Path:
    """The web example's page, script and styles."""
    return examples_dir() / "web"


def livekit_client_dir() -> Path | None:
    """The directory holding `livekit-client.umd.js`, or None when it is not installed.

    A wheel carries it as `roomscribe/vendor/livekit-client/`; a checkout has it in
    `node_modules/livekit-client/dist/` next to `examples/` after `npm ci`.
    """
    candidates = (
        _package_dir("roomscribe") / "vendor" / "livekit-client",
        examples_dir().parent / "node_modules" / "livekit-client" / "dist",
    )
    return next((d for d in candidates if (d / LIVEKIT_CLIENT_BUNDLE).is_file()), None)
