"""usnet's one logger and its progress bars.

Library code reports through ``logging.getLogger("usnet")`` (:data:`LOG`) and never prints, so
an application decides what reaches the user. Progress bars (tqdm) follow the logging level of
the child logger ``usnet.progress``: they show when it is enabled for INFO, so the one setting
that silences a run's lines silences its bars too, and no ``progress`` flag is passed from
function to function. Unconfigured (Python's default level, WARNING) a library call shows
neither; ``logging.basicConfig(level=logging.INFO)`` shows both. The ``usnet`` command calls
:func:`configure`: INFO lines as bare messages on stderr, bars on, ``--quiet`` leaves warnings
only, ``--no-progress`` drops the bars but keeps the lines (scripts parse them).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

LOG = logging.getLogger("usnet")
PROGRESS = logging.getLogger("usnet.progress")


def progress_bar(iterable: Iterable | None = None, *, hidden: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one: ``total=``), shown when ``usnet.progress``
    is enabled for INFO. ``hidden`` hides it whatever the level (e.g. on DDP ranks other than 0,
    whose bars would draw over rank 0's)."""
    shown = PROGRESS.isEnabledFor(logging.INFO) and not hidden
    return tqdm(iterable, disable=not shown, **kwargs)


class TqdmHandler(logging.Handler):
    """Writes each record through ``tqdm.write`` on the current ``sys.stderr``: a line logged
    while a bar is drawn appears above the bar instead of tearing it, and a replaced stderr
    (pytest's capture, a redirect) is the one written to."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's contract: a failing handler reports, never raises
            self.handleError(record)


def configure(quiet: bool = False, progress: bool = True) -> None:
    """The command line's logging: ``usnet`` INFO lines as bare messages on stderr (warnings only
    when ``quiet``), bars unless ``progress`` is false or ``quiet``. Calling it again replaces
    the previous setting (one handler, never two)."""
    for handler in list(LOG.handlers):
        if isinstance(handler, TqdmHandler):
            LOG.removeHandler(handler)
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.WARNING if quiet else logging.INFO)
    PROGRESS.setLevel(logging.NOTSET if progress else logging.WARNING)
