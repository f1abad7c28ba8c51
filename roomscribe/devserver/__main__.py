"""``python -m roomscribe.devserver``: same as ``roomscribe devserver``."""

from .cli import main

raise SystemExit(main())
