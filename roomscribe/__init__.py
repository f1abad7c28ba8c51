"""roomscribe: real-time transcription back end for voice apps on LiveKit.

The design's packages stay top-level (`control`, `agent`, `tokens`); everything else a user may
import lives here: `roomscribe.client`, `roomscribe.devserver`, `roomscribe.bench`, `roomscribe.cli`,
plus `roomscribe.common` (helpers every package may import) and `roomscribe.examples` (the sample
audio and the web page, installed from the repo's `examples/`). This module imports nothing.
"""
