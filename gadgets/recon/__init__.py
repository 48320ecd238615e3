"""drone_gadgets.recon — the gadget itself: what ``drone_mrf`` does with a stream of ISMRMRD messages.

Modules (each lists its public names in ``__all__``):

* :mod:`~drone_gadgets.recon.stages` — the gadget as generator stages (images → frames →
  trajectories → [B1] → maps → images), usable on plain lists.
* :mod:`~drone_gadgets.recon.prepare` — a scan's settings and estimator, checked before the first frame.
* :mod:`~drone_gadgets.recon.settings` — the gadget's documented, typed settings (the chain's properties).
* :mod:`~drone_gadgets.recon.estimators` — the DRONE network or dictionary matching, from the settings.
* :mod:`~drone_gadgets.recon.b1maps` — B1 maps from the stream or a file, onto the frames' grid.
* :mod:`~drone_gadgets.recon.header` — the schedule in the ISMRMRD header, and the header's checks.
* :mod:`~drone_gadgets.recon.conversion` — ``ismrmrd.Image``/``ImageArray`` ↔ numpy, version-robust.
* :mod:`~drone_gadgets.recon.errors` — the errors reported to Gadgetron (and to a server's clients).

May import: :mod:`drone_core`, ismrmrd, numpy, torch, and :mod:`drone_gadgets.files` (B1 maps in
``.h5`` files). Never a socket: the stages run on any iterable; :mod:`drone_gadgets.wire` carries them.
"""
