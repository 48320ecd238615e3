"""Data files of :mod:`drone_core.phantoms` (``brain_mni152_128.npz``; see ``README.md`` here)."""
