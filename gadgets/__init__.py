"""drone_gadgets — the ISMRMRD/Gadgetron stream side of DRONE (frames in, maps out).

Turns ISMRMRD messages into arrays for :mod:`drone_core` and its maps back into images.
"""

__all__: list[str] = []
