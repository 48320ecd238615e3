"""How magnetisation becomes raw data: receive coils (:mod:`.coils`) and EPI k-space sampling (:mod:`.epi`).

Used by ``drone simulate-scan --raw`` (:mod:`drone_gadgets.scans.raw`) to make what a scanner sends
Gadgetron's GRAPPA EPI chain. Never imports ismrmrd or gadgetron.
"""

from .coils import coil_sensitivities, correlated_noise, noise_covariance
from .epi import (
    EpiGhost,
    EpiReadout,
    calibration_lines,
    encode_lines,
    phase_encode,
    readout_operator,
    undersampled_lines,
)

__all__ = [
    "coil_sensitivities",
    "correlated_noise",
    "noise_covariance",
    "EpiGhost",
    "EpiReadout",
    "calibration_lines",
    "encode_lines",
    "phase_encode",
    "readout_operator",
    "undersampled_lines",
]
