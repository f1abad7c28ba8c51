"""Dependencies point one way: `roomscribe.common` imports nothing heavy, and the pipeline does
not import the client or the server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STDLIB = set(sys.stdlib_module_names)


def modules_after_import(*modules: str) -> set[str]:
    """Top-level packages (and roomscribe subpackages) loaded by importing `modules` in a fresh interpreter."""
    script = (f"import sys\nimport {', '.join(modules)}\n"
              "import json; print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    return {name if name.startswith("roomscribe.") else name.split(".")[0] for name in loaded}


@pytest.mark.timeout(60)
def test_common_imports_only_the_standard_library() -> None:
    loaded = modules_after_import("roomscribe.common.audio", "roomscribe.common.backoff",
                                  "roomscribe.common.package_data")
    ours = {name for name in loaded if name.startswith("roomscribe.")}
    assert ours == {"roomscribe.common", "roomscribe.common.audio", "roomscribe.common.backoff",
                    "roomscribe.common.package_data"}
    # `_distutils_hack` and an editable install's `__editable___…_finder` come from site-packages' .pth files.
    third_party = {name for name in loaded if name not in STDLIB and not name.startswith(("roomscribe", "_"))}
    assert not third_party, third_party


@pytest.mark.timeout(60)
def test_the_pipeline_and_room_agent_do_not_import_the_client_or_the_server() -> None:
    loaded = modules_after_import("agent.pipeline", "agent.room_agent")
    assert not {"control", "roomscribe.client", "roomscribe.bench", "roomscribe.devserver"} & loaded
