"""What every child process of the supervisor does first: logging and signals.

Children log to stderr in the supervisor's format with their own tag (the journal keeps them apart), ignore
SIGINT (a Ctrl-C in a terminal reaches the whole process group; the supervisor
coordinates the stop) and treat SIGTERM as a request to stop, which their main loop
polls through the returned flag.
"""

from __future__ import annotations

import logging
import signal
import sys

from printhost.config import Settings
from printhost.logfilter import RepeatFilter


def signal_name(signum: int) -> str:
    """"SIGKILL" for 9: how a child that died of a signal is named in a log line."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopFlag:
    """Set by SIGTERM; read by the child's main loop."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


# The one log format of every printhost process: time, process tag, level, logger.
LOG_FORMAT = "%(asctime)s {tag} %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, tag: str) -> None:
    """Log to stderr, one line per event, in `LOG_FORMAT` with this process's tag."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format=LOG_FORMAT.format(tag=tag))
    # A warning or error that repeats is logged once per interval, with a count.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())


def setup_child(settings: Settings, tag: str) -> StopFlag:
    configure_logging(settings.server.log_level, tag)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    flag = StopFlag()

    def on_term(signum, frame) -> None:
        flag.requested = True

    signal.signal(signal.SIGTERM, on_term)
    return flag
