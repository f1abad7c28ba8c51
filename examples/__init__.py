"""Sample recordings, example clients and the web page.

Installed as the package `roomscribe.examples` (see pyproject.toml) so that `roomscribe demo`, the
web example's server and the bench find these files in a wheel as in a checkout
(`roomscribe.common.package_data`). The example clients run as scripts: `python examples/stream_wav.py`.
"""
