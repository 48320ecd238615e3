"""drone_gadgets.files — the files people read and write: ISMRMRD ``.h5`` images, PNG figures, NIfTI maps.

Modules (each lists its public names in ``__all__``):

* :mod:`~drone_gadgets.files.h5io` — ISMRMRD ``.h5`` files in the standard layout: images in and out,
  acquisitions in, the XML header; version-robust (ismrmrd 1.14/1.15, numpy 1.26/2).
* :mod:`~drone_gadgets.files.figures` — PNG figures of the maps, one per slice.
* :mod:`~drone_gadgets.files.nifti` — NIfTI files of map stacks with the scanner geometry.

May import: ismrmrd, h5py, numpy, matplotlib and nibabel (the last two when used) — nothing else of
:mod:`drone_gadgets`, so every other sub-package can read and write files.
"""
