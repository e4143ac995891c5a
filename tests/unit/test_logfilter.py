"""RepeatFilter: an identical line repeating is logged once per interval, with a count."""

from __future__ import annotations

import logging

from printhost.logfilter import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _logger(name: str, flt: RepeatFilter) -> tuple[logging.Logger, list[str]]:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.addFilter(flt)
    logger.handlers[:] = [handler]
    return logger, lines


def test_a_flood_of_one_error_becomes_one_line_per_interval_with_a_count():
    clock = Clock()
    logger, lines = _logger("test.logfilter.flood", RepeatFilter(10.0, clock=clock))
    for _ in range(12000):
        logger.error("socket.accept() out of system resource\nsocket: %r", "<listener>")
        clock.now += 0.0001
    assert len(lines) == 1
    clock.now += 10.0
    logger.error("socket.accept() out of system resource\nsocket: %r", "<listener>")
    assert len(lines) == 2
    assert "[11999 identical lines suppressed in the last 11 s]" in lines[1]


def test_different_lines_and_lower_levels_pass():
    clock = Clock()
    logger, lines = _logger("test.logfilter.mixed", RepeatFilter(10.0, clock=clock))
    logger.error("disk full at %s", "/a")
    logger.error("disk full at %s", "/b")
    logger.warning("disk full at %s", "/a")
    for _ in range(3):
        logger.info("request done")
    assert len(lines) == 6


def test_a_percent_sign_in_a_suppressed_line_survives_the_count():
    clock = Clock()
    logger, lines = _logger("test.logfilter.percent", RepeatFilter(1.0, clock=clock))
    logger.warning("load at %d%%", 100)
    logger.warning("load at %d%%", 100)
    clock.now += 2
    logger.warning("load at %d%%", 100)
    assert lines == ["load at 100%", "load at 100% [1 identical line suppressed in the last 2 s]"]


def test_the_service_logging_setup_limits_asyncio_accept_error_floods():
    """configure_logging (every printhost process) puts the filter on the root handlers,
    so asyncio's accept error, logged per failed accept, is one line, not thousands."""
    import subprocess
    import sys
    code = (
        "import logging\n"
        "from printhost.childproc import configure_logging\n"
        "configure_logging('info', 'supervisor')\n"
        "log = logging.getLogger('asyncio')\n"
        "for _ in range(12000):\n"
        "    try:\n"
        "        raise OSError(24, 'Too many open files')\n"
        "    except OSError as exc:\n"
        "        log.error('socket.accept() out of system resource\\nsocket: %r', '<sock>',\n"
        "                  exc_info=exc)\n"
        "logging.getLogger('printhost.api.access').info('a request')\n"
        "logging.getLogger('printhost.api.access').info('a request')\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stderr
    assert err.count("socket.accept() out of system resource") == 1
    assert err.count("Too many open files") == 1       # one traceback, not 12000
    assert err.count("a request") == 2                 # INFO lines are not limited
