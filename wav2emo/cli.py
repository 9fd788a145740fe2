"""What the command-line entry points share: user errors as one line, not a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from wav2emo.errors import UserError


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Turn a :class:`UserError` into ``<prog>: <message>`` on stderr and exit status 2.

    The message also goes to the run's log file (Hydra's job logging), so a sweep's log says why a job
    stopped. Other exceptions are bugs and propagate with their traceback.
    """
    try:
        yield
    except UserError as e:
        logging.getLogger(prog).debug("stopped by a user error", exc_info=True)
        for handler in logging.getLogger().handlers:  # the file handler, when Hydra set one up
            if isinstance(handler, logging.FileHandler):
                handler.handle(logging.makeLogRecord(
                    {"name": prog, "levelno": logging.ERROR, "levelname": "ERROR", "msg": str(e)}))
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
