"""drone_core — the science of DRONE: schedules, EPG simulation, Cramér–Rao bounds, dictionaries.

Never imports ismrmrd or gadgetron (those live in ``drone_gadgets``).
"""

from ._version import __version__

__all__ = ["__version__"]
