"""What the slice-profile model's error does to the maps: the real excitation waveform against the model.

For WM/GM/CSF at B1 0.7, 1.0 and 1.3, the fingerprints of a Bloch simulation of the exact waveform and
z gradient that ``drone sequence`` writes (``tests/waveform_bloch.py``: 2000 isochromats across the
slice, relaxation throughout) and of the profile EPG model go through the shipped network (given the
true B1); the table shows both biases against the truth and the fingerprints' max normalised
difference (docs/SCANNER.md, §6). Noise-free; about 40 s on 2 cores.

Run::

    .venv/bin/python benchmarks/profile_bias.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from drone_core.crb import BRAIN_TISSUES_1P5T  # noqa: E402
from drone_core.epg import simulate  # noqa: E402
from drone_core.model import default_model  # noqa: E402
from drone_core.schedule import default_schedule  # noqa: E402
from waveform_bloch import mrf_column, simulate_column  # noqa: E402

N_Z = 2000


def main() -> int:
    schedule = default_schedule()
    seq, samples, z = mrf_column(schedule, N_Z)  # ±2.5 slice thicknesses of 5 mm
    names = ("WM", "GM", "CSF")
    t1 = np.array([BRAIN_TISSUES_1P5T[n][0] for n in names])
    t2 = np.array([BRAIN_TISSUES_1P5T[n][1] for n in names])
    network = default_model()
    print("| tissue | B1 | T1 bias, waveform (model) | T2 bias, waveform (model) | max normalised difference |")
    print("|---|---|---|---|---|")
    for b1 in (0.7, 1.0, 1.3):
        waveform = np.abs(simulate_column(seq, samples, z, t1, t2, b1=b1))
        model = np.abs(simulate(schedule, t1, t2, b1=b1))
        b1s = np.full(len(names), b1)
        (t1_w, t2_w), (t1_m, t2_m) = network.predict(waveform, b1s), network.predict(model, b1s)
        for i, name in enumerate(names):
            a = waveform[i] / np.linalg.norm(waveform[i])
            b = model[i] / np.linalg.norm(model[i])
            print(f"| {name} | {b1:g} | {100 * (t1_w[i] / t1[i] - 1):+.2f} % ({100 * (t1_m[i] / t1[i] - 1):+.2f} %) "
                  f"| {100 * (t2_w[i] / t2[i] - 1):+.2f} % ({100 * (t2_m[i] / t2[i] - 1):+.2f} %) "
                  f"| {100 * np.max(np.abs(a - b)):.2f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
