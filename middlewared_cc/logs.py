"""Log set-up: one line per state change or failure, to stderr or a file; never a secret."""

from __future__ import annotations

import logging
import sys

from middlewared_cc.settings import Settings


def setup_logging(settings: Settings) -> None:
    handler: logging.Handler
    if settings.log_file:
        handler = logging.FileHandler(settings.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("middlewared_cc")
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    root.propagate = False
    # aiohttp logs request lines and handler errors; keep its failures, not its routine.
    logging.getLogger("aiohttp").addHandler(handler)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
