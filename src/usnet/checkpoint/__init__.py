"""Checkpoints: a folder of ``model.safetensors`` and ``usnet.json`` (design.md, "Checkpoints").

- :mod:`.format`: what the two files hold, validated on reading (:class:`CheckpointError`), and
  the checksum of the weights that ``usnet.json`` records;
- :mod:`.folder`: the folder's lock, crash recovery, and paths through symbolic links;
- :mod:`.writing`: :func:`save` (the folder appears complete or not at all and keeps every
  entry it does not own), :func:`save_statistics`, :func:`update_meta`;
- :mod:`.merge`: widths another process calibrated meanwhile survive a save;
- :mod:`.reading`: :func:`load`, rebuilding the model within the memory the weights justify;
- :mod:`.state`: resume state and other torch-saved files, never unpickled.
"""

from .folder import folder_of, locked, recover
from .format import INFO, WEIGHTS, CheckpointError, weights_id
from .reading import load, read_info, read_meta
from .state import load_state, save_state
from .writing import save, save_statistics, update_meta

__all__ = [
    "INFO",
    "WEIGHTS",
    "CheckpointError",
    "folder_of",
    "load",
    "load_state",
    "locked",
    "read_info",
    "read_meta",
    "recover",
    "save",
    "save_state",
    "save_statistics",
    "update_meta",
    "weights_id",
]
