"""drone_gadgets.wire — the protocols: how ISMRMRD messages travel between the gadget, Gadgetron and clients.

Modules (each lists its public names in ``__all__``):

* :mod:`~drone_gadgets.wire.external` — Gadgetron's external-node protocol, the gadget's side, handled
  robustly around gadgetron-python (ERROR before CLOSE, a peer that goes away, bounded reads).
* :mod:`~drone_gadgets.wire.loopback` — Gadgetron's side of that protocol over loopback: start the gadget's
  process exactly as Gadgetron does and run a stream through it (``drone replay``, the tests).
* :mod:`~drone_gadgets.wire.mrd` — the MRD streaming protocol of clients and servers (Gadgetron's
  ``gadgetron_ismrmrd_client``, python-ismrmrd-server), read with bounds.
* :mod:`~drone_gadgets.wire.chains` — the chains a server runs, chosen by CONFIG_FILE or CONFIG_TEXT.

May import: :mod:`drone_gadgets.recon` (settings, conversion, the header check, errors), ismrmrd,
numpy. Not :mod:`drone_gadgets.apps`, which is built on it.
"""
