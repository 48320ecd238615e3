"""``drone demo`` (= ``make demo``): the whole product on a fresh machine, end to end.

1. Simulate a brain MRF scan (MNI152 WM/GM/CSF phantom, the paper's Table 1 values, the default
   schedule, 1 % noise) and write it as an ISMRMRD ``.h5`` (``drone simulate-scan``).
2. Replay it through the real ``drone_mrf`` Gadgetron handler over loopback, exactly as Gadgetron
   would run it, with the shipped model (``drone replay``); the maps come back as ISMRMRD images.
3. Compare the maps with the truth: per-tissue mean ± sd and RMSE, a PNG panel of T1, T2, M0 and
   their error maps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "run"]

TISSUES = {1: "CSF", 2: "GM", 3: "WM"}
MAP_VARS = {"t1": "image_100", "t2": "image_101", "m0": "image_102"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default %(default)s)")
    p.add_argument("--slices", type=int, default=3, help="brain slices (1-7)")
    p.add_argument("--noise", type=float, default=0.01,
                   help="noise, fraction of the brightest voxel's peak (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--estimator", choices=("network", "dictionary"), default="network")


def _read_maps(path: Path, group: str) -> dict[str, np.ndarray]:
    from drone_gadgets.h5io import read_images

    out = {}
    for name, var in MAP_VARS.items():
        images = sorted(read_images(path, group, [var]), key=lambda im: int(im.getHead().slice))
        out[name] = np.stack([np.asarray(im.data, dtype=np.float32)[0, 0] for im in images])
    return out


def _panel(truth: dict[str, np.ndarray], est: dict[str, np.ndarray], z: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (("t1", "T1 (ms)", 3000.0), ("t2", "T2 (ms)", 300.0), ("m0", "M0 (a.u.)", 1.0))
    fig, axes = plt.subplots(3, 3, figsize=(10.5, 10), dpi=90)
    for r, (key, label, vmax) in enumerate(rows):
        t, e = truth[key][z], est[key][z]
        err = np.abs(e - t)
        for c, (img, title, top, cmap) in enumerate(((t, f"true {label}", vmax, "inferno"),
                                                      (e, f"DRONE {label}", vmax, "inferno"),
                                                      (err, f"|error| {label}", vmax / 10, "viridis"))):
            ax = axes[r, c]
            im = ax.imshow(img, vmin=0, vmax=top, cmap=cmap)
            ax.set_title(title)
            ax.axis("off")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"DRONE demo — brain phantom, slice {z}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from drone_core.phantoms import brain_phantom
    from drone_core.schedule import default_schedule
    from drone_gadgets.replay import replay
    from drone_gadgets.scan import read_truth, write_phantom_scan

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scan_path, maps_path = out / "brain_scan.h5", out / "brain_maps.h5"
    schedule = default_schedule()
    t0 = time.perf_counter()
    phantom = brain_phantom(n_slices=args.slices)
    info = write_phantom_scan(scan_path, phantom, schedule, noise_level=args.noise, seed=args.seed, overwrite=True)
    t_sim = time.perf_counter() - t0
    print(f"1. simulated {scan_path}: {args.slices} brain slice(s) {phantom.labels.shape[1:]}, "
          f"{schedule.n_frames} frames ({schedule.name}, {schedule.duration_ms / 1000:.2f} s per slice), "
          f"{args.noise:.1%} noise — {t_sim:.1f} s")
    if maps_path.exists():
        maps_path.unlink()
    result = replay(scan_path, maps_path, group="dataset", settings={"estimator": args.estimator},
                    png_dir=out / "png", progress=False)
    print(f"2. replayed through the drone_mrf gadget ({args.estimator}) over loopback: {result.frames} frames → "
          f"{result.maps} map images in {result.seconds:.2f} s (gadget process {result.gadget_seconds:.2f} s, "
          f"stream {result.stream_seconds:.2f} s) → {maps_path}")
    truth = read_truth(scan_path)
    est = _read_maps(maps_path, result.out_group)
    labels = truth["labels"].astype(int)
    print("3. accuracy against the truth (mean ± sd over the tissue; RMSE):")
    print(f"   {'tissue':6s} {'voxels':>7s} {'true T1/T2':>12s} {'T1 (ms)':>16s} {'RMSE':>6s} {'T2 (ms)':>14s} "
          f"{'RMSE':>6s} {'M0 rel. err':>11s}")
    for label, name in TISSUES.items():
        m = labels == label
        if not m.any():
            continue
        t1, t2, m0 = est["t1"][m], est["t2"][m], est["m0"][m]
        tt1, tt2, tm0 = truth["t1"][m], truth["t2"][m], truth["m0"][m]
        rm1 = float(np.sqrt(np.mean((t1 - tt1) ** 2)))
        rm2 = float(np.sqrt(np.mean((t2 - tt2) ** 2)))
        m0_err = float(np.median(np.abs(m0 / tm0 - 1)))
        print(f"   {name:6s} {int(m.sum()):7d} {tt1.mean():6.0f}/{tt2.mean():<5.0f} {t1.mean():7.0f} ± "
              f"{t1.std():<6.1f} {rm1:6.1f} {t2.mean():6.0f} ± {t2.std():<5.1f} {rm2:6.1f} {m0_err:10.1%}")
    for z in range(labels.shape[0]):
        _panel(truth, est, z, out / f"panel_slice{z}.png")
    print(f"   figures: {out / 'panel_slice0.png'} (truth, estimate, |error|), {out / 'png'} (maps as the replay "
          f"draws them)")
    print(f"total {time.perf_counter() - t0:.1f} s for {info.n_images} frame images "
          f"({info.n_slices} slice(s) × {info.n_frames} frames)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="drone demo", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
