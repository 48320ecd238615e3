"""The sequence a scanner runs, written from the schedule: EPI-MRF as a Pulseq file (pypulseq).

* :mod:`~drone_core.sequence.epi_mrf` — the sequence the signal model describes (inversion, TI, the
  schedule's slice-selective pulse, single-shot EPI with navigators and GRAPPA sampling, rewinders and
  one constant spoiler per TR, the ACS reference), its timing and the minimum a schedule needs.
* :mod:`~drone_core.sequence.gradient_system` — the hardware limits it is written for (named presets).
* :mod:`~drone_core.sequence.readback` — a Pulseq file read back: its excitations, flip angles, ADCs
  and labels, TE, TRs and TI as the scanner will play them.

pypulseq is imported where a sequence is built or read (``pip install "drone-gadgetron[scanner]"``).
"""
