"""Build hook for what pyproject.toml cannot declare: the livekit-client browser bundle.

The web example loads `livekit-client.umd.js` (pinned in package-lock.json). It lives in
`node_modules/` (`npm ci`), outside every package, so a wheel built after `npm ci` gets a copy as
`roomscribe/vendor/livekit-client/` (with its Apache-2.0 licence). Without node_modules the wheel
is built without it and the installed web page offers only the WebSocket fallback. Editable
installs read node_modules in place (`roomscribe.common.package_data.livekit_client_dir`).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

LIVEKIT_CLIENT = Path("node_modules") / "livekit-client"
BUNDLE_FILES = (LIVEKIT_CLIENT / "dist" / "livekit-client.umd.js", LIVEKIT_CLIENT / "LICENSE")
TARGET = Path("roomscribe") / "vendor" / "livekit-client"


class BuildPyWithBrowserSdk(build_py):
    """`build_py`, plus the livekit-client bundle copied into the build when node_modules has it."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        missing = [str(path) for path in BUNDLE_FILES if not path.is_file()]
        if missing:
            self.warn(f"{', '.join(missing)} missing (run `npm ci` first): the wheel's web page will offer only the ws fallback")
            return
        target = Path(self.build_lib) / TARGET
        self.mkpath(str(target))
        for path in BUNDLE_FILES:
            self.copy_file(str(path), str(target / path.name))


setup(cmdclass={"build_py": BuildPyWithBrowserSdk})
