"""drone_gadgets.apps — the stream-side ``drone`` commands: the gadget run from files, by a server, for a client.

Modules (each lists its public names in ``__all__``; the command modules have ``add_arguments`` and
``run`` for :mod:`drone_cli`):

* :mod:`~drone_gadgets.apps.replay` — ``drone replay``: a file through the real gadget process, over
  loopback, exactly as Gadgetron runs it.
* :mod:`~drone_gadgets.apps.server` — ``drone serve``: a standing MRD server running the gadget's stages.
* :mod:`~drone_gadgets.apps.client` — ``drone send``: its client (any MRD server, Gadgetron's included).
* :mod:`~drone_gadgets.apps.simulate_scan` — ``drone simulate-scan``: a simulated scan file.
* :mod:`~drone_gadgets.apps.inputs` — what a run sends from an ``.h5`` file (group, frames, B1 maps, raw data).
* :mod:`~drone_gadgets.apps.outputs` — where the maps go (``.h5``, PNG, NIfTI).

May import: every other sub-package of :mod:`drone_gadgets` and :mod:`drone_core`; nothing imports
it but :mod:`drone_cli` and the tests.
"""
