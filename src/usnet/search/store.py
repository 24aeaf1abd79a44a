"""Measured candidates kept on disk, so a search killed half way continues instead of restarting.

The search algorithms are deterministic given the measurements (seeded choices, ties broken by
fixed keys), so resuming is replaying: a rerun asks for the same networks in the same order and
finds the ones already measured here. The file is keyed by everything a measurement depends
on (:func:`fingerprint`: the weights, the validation and calibration data, the threads), so a
search with other settings never reads stale numbers; any method and budget share it. Every new
measurement rewrites the file atomically (a temporary file renamed into place): a kill leaves
the previous complete file, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io import atomic_write, make_parent
from .front import Candidate

STORE_FORMAT = "usnet-search-store"
STORE_VERSION = 1


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A short stable name of the measuring ``settings`` (JSON-able)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class SearchStore:
    """Candidates by network key (measured), and costs by network key (counted, maybe not yet
    measured), for one set of measuring ``settings``; ``path`` ``None`` keeps them in memory.
    ``guard`` is held around each write (a checkpoint folder's lock, when the file is in one)."""

    def __init__(
        self,
        path: str | Path | None,
        settings: Mapping[str, Any],
        guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.guard = guard
        self.settings = json.loads(json.dumps(dict(settings)))  # a JSON-normal copy
        self.candidates: dict[str, Candidate] = {}
        self.costs: dict[str, dict[str, Any]] = {}
        #: How many candidates were measured before this process (found in the file).
        self.resumed = 0
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(
                f"{path}: unreadable search store ({e}); remove it to start afresh"
            ) from None
        if doc.get("format") != STORE_FORMAT or doc.get("format_version") != STORE_VERSION:
            raise UsageError(
                f"{path}: not a usnet search store (format {doc.get('format')!r} version "
                f"{doc.get('format_version')!r}); remove it to start afresh"
            )
        if doc.get("settings") != self.settings:
            raise UsageError(
                f"{path}: its measuring settings differ from this search's; remove it to start "
                "afresh"
            )
        try:
            self.candidates = {
                k: Candidate.from_dict(v) for k, v in dict(doc.get("candidates") or {}).items()
            }
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(
                f"{path}: a candidate is malformed ({e}); remove it to start afresh"
            ) from None
        self.costs = {str(k): dict(v) for k, v in dict(doc.get("costs") or {}).items()}
        self.resumed = len(self.candidates)

    def add(self, candidate: Candidate) -> None:
        """Keep a measured candidate and write the file."""
        self.candidates[candidate.network] = candidate
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        doc = {
            "format": STORE_FORMAT,
            "format_version": STORE_VERSION,
            "settings": self.settings,
            "candidates": {k: c.to_dict() for k, c in self.candidates.items()},
            "costs": self.costs,
        }
        text = json.dumps(doc, indent=1)
        with self.guard():
            atomic_write(make_parent(self.path, "search store"), lambda tmp: tmp.write_text(text))


class MetricsStore:
    """Metrics by network key for one measuring ``settings`` (the front's test metrics), kept
    in ``path`` as :class:`SearchStore` keeps candidates: refused when written with other
    settings, rewritten atomically after each new entry under ``guard``."""

    FORMAT = "usnet-search-metrics"

    def __init__(
        self,
        path: str | Path,
        settings: Mapping[str, Any],
        guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.path, self.guard = Path(path), guard
        self.settings = json.loads(json.dumps(dict(settings)))
        self.metrics: dict[str, dict[str, float]] = {}
        if self.path.is_file():
            try:
                doc = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise UsageError(
                    f"{self.path}: unreadable metrics store ({e}); remove it to start afresh"
                ) from None
            if doc.get("format") != self.FORMAT or doc.get("settings") != self.settings:
                raise UsageError(
                    f"{self.path}: not a metrics store of this search's settings; remove it to "
                    "start afresh"
                )
            self.metrics = {
                str(k): {str(m): float(v) for m, v in dict(ms).items()}
                for k, ms in dict(doc.get("metrics") or {}).items()
            }

    def add(self, network: str, metrics: Mapping[str, float]) -> None:
        """Keep ``network``'s metrics and write the file."""
        self.metrics[network] = dict(metrics)
        doc = {"format": self.FORMAT, "settings": self.settings, "metrics": self.metrics}
        text = json.dumps(doc, indent=1)
        with self.guard():
            atomic_write(make_parent(self.path, "metrics store"), lambda tmp: tmp.write_text(text))
