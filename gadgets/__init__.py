"""drone_gadgets — the ISMRMRD/Gadgetron stream side of DRONE (frames in, maps out).

Turns ISMRMRD messages into arrays for :mod:`drone_core` and its maps back into images.

Modules (each lists its public names in ``__all__``):

* :mod:`~drone_gadgets.gadget` — the Gadgetron handler ``drone_mrf``
  (``<execute name="drone_gadgets.gadget" target="drone_mrf" type="python"/>``).
* :mod:`~drone_gadgets.stages` — the gadget as generator stages
  (images → frames → trajectories → maps → images), usable on plain lists.
* :mod:`~drone_gadgets.settings` — the gadget's documented, typed settings.
* :mod:`~drone_gadgets.header` — the schedule in the ISMRMRD header and its check.
* :mod:`~drone_gadgets.estimators` — DRONE network or dictionary matching, from the settings.
* :mod:`~drone_gadgets.conversion` — ``ismrmrd.Image``/``ImageArray`` ↔ numpy, version-robust.
* :mod:`~drone_gadgets.protocol` — the external-node protocol, robust around gadgetron-python.
* :mod:`~drone_gadgets.errors` — the errors reported to Gadgetron (and to the server's clients).
* :mod:`~drone_gadgets.mrd` — the MRD streaming protocol of clients and servers (bounded reading).
* :mod:`~drone_gadgets.chains` — the chains a server runs, chosen by CONFIG_FILE or CONFIG_TEXT.
* :mod:`~drone_gadgets.server` — ``drone serve``, a standing server running the gadget's stages.
* :mod:`~drone_gadgets.client` — ``drone send``, its client.
* :mod:`~drone_gadgets.replay`, :mod:`~drone_gadgets.loopback`, :mod:`~drone_gadgets.h5io`,
  :mod:`~drone_gadgets.scan` — replay through the real gadget process, ``.h5`` I/O, simulated scans.

Names are imported lazily (``drone_gadgets.pipeline`` imports torch only when first used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "drone_mrf": "gadget",
    "prepare": "gadget",
    "pipeline": "stages",
    "Frame": "stages",
    "Trajectory": "stages",
    "MapSet": "stages",
    "GadgetSettings": "settings",
    "parse_settings": "settings",
    "settings_table": "settings",
    "PROPERTIES": "settings",
    "build_estimator": "estimators",
    "check_header_schedule": "header",
    "StreamError": "errors",
    "GadgetFailed": "errors",
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
