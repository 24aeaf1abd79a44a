"""Non-uniform widths: find the best network of a US-Net for a budget (design.md, "search").

- :mod:`.space`: each channel group's distinct widths (levels); points of the search space.
- :mod:`.front`: candidates, budgets, the front (no candidate beats a member on cost and metric).
- :mod:`.measure`: a candidate's costs, calibration and validation metrics, cached.
- :mod:`.store`: measurements on disk, so a killed search resumes by replay.
- :mod:`.greedy`: AutoSlim's greedy slimming; :mod:`.evolution`: Once-for-All's evolution.
- :mod:`.core`: one search (uniform widths + a method); :mod:`.run`: a checkpoint's search and
  its files; :mod:`.confirm`: the front on the test set, timed; :mod:`.report`: search.json/md
  and reading widths back; :mod:`.plot`: search.png.
"""

from .core import METHODS, SearchResult, SearchSettings, run_search
from .evolution import EvolutionSettings
from .front import Budget, Candidate, best_within, choose, pareto_front
from .report import read, searched_widths
from .run import SearchData, search_checkpoint
from .space import SearchSpace, search_space

__all__ = [
    "METHODS",
    "Budget",
    "Candidate",
    "EvolutionSettings",
    "SearchData",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "best_within",
    "choose",
    "pareto_front",
    "read",
    "run_search",
    "search_checkpoint",
    "search_space",
    "searched_widths",
]
