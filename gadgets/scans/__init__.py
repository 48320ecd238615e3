"""drone_gadgets.scans — scans as ISMRMRD files: what the chain receives, on disk.

Modules (each lists its public names in ``__all__``):

* :mod:`~drone_gadgets.scans.layout` — what a scan file holds (groups, vars, series), its ISMRMRD
  header, each slice's geometry: the parts every kind of scan shares.
* :mod:`~drone_gadgets.scans.images` — simulated MRF image frames (what the gadget receives from
  Gadgetron's reconstruction).
* :mod:`~drone_gadgets.scans.raw` — simulated raw multi-coil EPI k-space (what a scanner sends
  Gadgetron's GRAPPA EPI chain).
* :mod:`~drone_gadgets.scans.b1` — a scan's B1 map: the transmit field it was simulated with.
* :mod:`~drone_gadgets.scans.truth` — the true maps stored beside a simulated scan.

The simulations themselves are science and live in :mod:`drone_core` (signals, phantoms, EPI
encoding); here their arrays become ISMRMRD headers, images and acquisitions. Scanner raw data
converted to ISMRMRD belongs here too.

May import: :mod:`drone_core`, :mod:`drone_gadgets.recon` (settings, conversion, header),
:mod:`drone_gadgets.files`, ismrmrd, numpy.
"""
