"""drone_gadgets — the ISMRMRD/Gadgetron stream side of DRONE (frames in, maps out).

Turns ISMRMRD messages into arrays for :mod:`drone_core` and its maps back into images. The house,
by idea (each sub-package's docstring says what lives there and what it may import):

* :mod:`~drone_gadgets.gadget` — the stable entry of every chain: the Gadgetron handler ``drone_mrf``
  (``<execute name="drone_gadgets.gadget" target="drone_mrf" type="python"/>``).
* :mod:`~drone_gadgets.recon` — the gadget itself: its settings, its stages (images → frames →
  trajectories → [B1] → maps → images), the estimator, B1 maps, the header check, message ↔ array
  conversion, the errors it reports.
* :mod:`~drone_gadgets.wire` — the protocols: Gadgetron's external node, the MRD client/server
  protocol, Gadgetron's side of an external node over loopback, the chains a server knows.
* :mod:`~drone_gadgets.files` — files people read: ISMRMRD ``.h5`` images, PNG figures, NIfTI.
* :mod:`~drone_gadgets.scans` — scans as ISMRMRD files: simulated image frames and raw EPI k-space.
* :mod:`~drone_gadgets.apps` — the stream-side ``drone`` commands: ``replay``, ``serve``, ``send``,
  ``simulate-scan``, and the inputs and outputs they share.

Imports go one way: ``files`` ← ``recon`` ← ``wire`` ← ``apps``; ``scans`` takes from ``recon`` and
``files``; ``apps`` from all; :mod:`~drone_gadgets.gadget` from ``recon`` and ``wire``. Nothing here
imports ``drone_cli`` or ``drone_training``.

Names are imported lazily (``drone_gadgets.pipeline`` imports torch only when first used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "drone_mrf": "gadget",
    "prepare": "recon.prepare",
    "pipeline": "recon.stages",
    "Frame": "recon.stages",
    "Trajectory": "recon.stages",
    "MapSet": "recon.stages",
    "GadgetSettings": "recon.settings",
    "parse_settings": "recon.settings",
    "settings_table": "recon.settings",
    "PROPERTIES": "recon.settings",
    "build_estimator": "recon.estimators",
    "check_header_schedule": "recon.header",
    "StreamError": "recon.errors",
    "GadgetFailed": "recon.errors",
}

__all__ = [
    "GadgetFailed", "GadgetSettings", "Frame", "MapSet", "PROPERTIES", "StreamError", "Trajectory",
    "build_estimator", "check_header_schedule", "drone_mrf", "parse_settings", "pipeline", "prepare",
    "settings_table",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'drone_gadgets' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
