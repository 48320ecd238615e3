"""``drone demo`` (= ``make demo``): the whole product on a fresh machine, end to end, with real physics.

1. Simulate a brain MRF scan (MNI152 WM/GM/CSF phantom, the paper's Table 1 values, the default
   schedule with its slice profile, 1 % noise) under a smooth 3 T-like transmit field (relative
   B1 1.2 in the middle of the head, 0.8 at its outline: :func:`drone_core.b1_field.head_b1_field`)
   and write it as an ISMRMRD ``.h5`` with its B1 map (``drone simulate-scan --b1 3t``).
2. Replay it twice through the real ``drone_mrf`` Gadgetron handler over loopback, exactly as
   Gadgetron would run it, with the shipped model (``drone replay``): once with the B1 map in the
   stream (``b1=stream``: the model takes each voxel's B1), once without (``b1=none``: the model
   assumes B1 = 1).
3. Compare both with the truth: per-tissue mean ± sd and bias of T1 and T2 side by side, and a
   PNG panel per slice: the B1 map, the maps with the B1 map, and the error maps with and without it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "run", "TISSUES", "RUNS"]

TISSUES = {3: "WM", 2: "GM", 1: "CSF"}
MAP_VARS = {"t1": "image_100", "t2": "image_101", "m0": "image_102"}
#: The two replays: (key, column title, gadget property b1, maps file name).
RUNS = (("b1map", "with the B1 map (b1=stream)", "stream", "brain_maps.h5"),
        ("nob1", "without (b1=none: B1 = 1 assumed)", "none", "brain_maps_no_b1.h5"))
#: Colour range of the signed relative error maps, % of the truth.
ERROR_RANGE_PERCENT = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default %(default)s)")
    p.add_argument("--slices", type=int, default=2,
                   help="brain slices, 1-7 (default %(default)s: the demo takes about a minute on 2 cores; each slice "
                        "is simulated once and reconstructed twice, with the slice profile)")
    p.add_argument("--noise", type=float, default=0.01,
                   help="noise, fraction of the brightest voxel's peak (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--b1-centre", type=float, default=None,
                   help="relative B1 in the middle of the head (default 1.2)")
    p.add_argument("--b1-edge", type=float, default=None, help="relative B1 at the outline of the head (default 0.8)")
    p.add_argument("--estimator", choices=("network", "dictionary"), default="network",
                   help="network: the shipped model (takes B1); dictionary: paper-grid matching, which has no B1 "
                        "axis, so only the replay without the B1 map is run")


def _read_maps(path: Path, group: str) -> dict[str, np.ndarray]:
    from drone_gadgets.files.h5io import read_images

    out = {}
    for name, var in MAP_VARS.items():
        images = sorted(read_images(path, group, [var]), key=lambda im: int(im.getHead().slice))
        out[name] = np.stack([np.asarray(im.data, dtype=np.float32)[0, 0] for im in images])
    return out


def _relative_error_percent(est: np.ndarray, truth: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """(estimate − truth) / truth in %, NaN outside the tissue (drawn as background)."""
    out = np.full(truth.shape, np.nan, dtype=np.float64)
    out[tissue] = 100.0 * (est[tissue] / truth[tissue] - 1.0)
    return out


def _panel(truth: dict[str, np.ndarray], results: dict[str, dict[str, np.ndarray]], z: int, path: Path) -> None:
    """One slice: B1 map and M0; T1/T2 with the B1 map; T1/T2 error (%) with and without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tissue = truth["labels"][z] != 0
    with_b1 = results.get("b1map")
    without = results.get("nob1")
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.5), dpi=80)
    b1 = np.where(tissue, truth["b1"][z], np.nan)
    first = with_b1 if with_b1 is not None else without
    assert first is not None
    cells = [
        (0, 0, b1, "true B1 (relative)", 0.7, 1.3, "coolwarm"),
        (1, 0, first["m0"][z], "DRONE M0 (a.u.)", 0.0, 1.0, "gray"),
    ]
    for r, (key, label, top) in enumerate((("t1", "T1 (ms)", 3000.0), ("t2", "T2 (ms)", 300.0))):
        cells.append((r, 1, first[key][z], f"DRONE {label}" + (" with B1 map" if with_b1 is not None else ""),
                      0.0, top, "inferno"))
        for c, (res, title) in ((2, (with_b1, "with B1 map")), (3, (without, "without (B1 = 1)"))):
            if res is None:
                axes[r, c].axis("off")
                continue
            err = _relative_error_percent(res[key][z], truth[key][z], tissue)
            cells.append((r, c, err, f"{label.split()[0]} error % {title}", -ERROR_RANGE_PERCENT,
                          ERROR_RANGE_PERCENT, "RdBu_r"))
    for r, c, img, title, lo, hi, cmap in cells:
        ax = axes[r, c]
        im = ax.imshow(img, vmin=lo, vmax=hi, cmap=cmap)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"DRONE demo — brain phantom at 3 T-like B1, slice {z}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _stats(est: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(mean, sd, bias % of the true mean) over a tissue's voxels."""
    mean = float(est.mean())
    return mean, float(est.std()), 100.0 * (mean / float(truth.mean()) - 1.0)


def run(args: argparse.Namespace) -> int:
    from drone_core.phantoms import brain_phantom
    from drone_core.schedule import default_schedule
    from drone_gadgets.apps.replay import replay
    from drone_gadgets.scans.b1 import phantom_b1
    from drone_gadgets.scans.images import write_phantom_scan
    from drone_gadgets.scans.layout import B1_VAR
    from drone_gadgets.scans.truth import read_truth

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    scan_path = out / "brain_scan.h5"
    schedule = default_schedule()
    t0 = time.perf_counter()
    phantom = brain_phantom(n_slices=args.slices)
    b1, b1_text = phantom_b1("3t", phantom, centre=args.b1_centre, edge=args.b1_edge)
    info = write_phantom_scan(scan_path, phantom, schedule, noise_level=args.noise, seed=args.seed, b1=b1,
                              b1_description=b1_text, overwrite=True)
    t_sim = time.perf_counter() - t0
    tissue = phantom.labels != 0
    profile = ("ideal slice profile" if schedule.excitation is None
               else f"slice profile {schedule.excitation.describe()}")
    print(f"1. simulated {scan_path}: {args.slices} brain slice(s) {phantom.labels.shape[1:]}, "
          f"{schedule.n_frames} frames ({schedule.name}, {schedule.duration_ms / 1000:.2f} s per slice, {profile}), "
          f"{args.noise:.1%} noise, B1 {b1_text}: {b1[tissue].min():.2f}-{b1[tissue].max():.2f} over the brain "
          f"(B1 map in /{info.group}/{B1_VAR}) — {t_sim:.1f} s")
    runs = RUNS if args.estimator == "network" else RUNS[1:]
    if args.estimator != "network":
        print("   (dictionary matching: the paper-grid dictionary has no B1 axis, so only the replay without the "
              "B1 map)")
    results: dict[str, dict[str, np.ndarray]] = {}
    for k, (key, title, mode, name) in enumerate(runs):
        maps_path = out / name
        if maps_path.exists():
            maps_path.unlink()
        result = replay(scan_path, maps_path, group=info.group, settings={"estimator": args.estimator, "b1": mode},
                        png_dir=out / "png" if k == 0 else None, progress=False)
        sent = f"{result.frames - result.b1_images} frames" + (f" + {result.b1_images} B1 map images"
                                                                 if result.b1_images else "")
        print(f"2{'ab'[k]}. replayed {title} through the drone_mrf gadget ({args.estimator}) over loopback: {sent} "
              f"→ {result.maps} map images in {result.seconds:.2f} s (gadget process {result.gadget_seconds:.2f} s) "
              f"→ {maps_path}")
        results[key] = _read_maps(maps_path, result.out_group)
    truth = read_truth(scan_path)
    labels = truth["labels"].astype(int)
    print("3. accuracy against the truth: mean ± sd over the tissue, bias = (mean − true) / true")
    titles = {key: title for key, title, _, _ in RUNS}
    cell = 38  # "mean ± sd bias" of T1 then of T2, as the rows below print them
    print(f"   {'':24s} " + " | ".join(f"{titles[key]:^{cell}s}" for key in results))
    head = f"{'T1 (ms)':>12s} {'bias':>6s} {'T2 (ms)':>11s} {'bias':>6s}"
    print(f"   {'tissue':6s} {'voxels':>6s} {'true T1/T2':>10s} " + " | ".join(
        f"{head:{cell}s}" for _ in results))
    for label, name in TISSUES.items():
        m = labels == label
        if not m.any():
            continue
        tt1, tt2 = truth["t1"][m], truth["t2"][m]
        cols = []
        for est in results.values():
            m1, s1, b1_pct = _stats(est["t1"][m], tt1)
            m2, s2, b2_pct = _stats(est["t2"][m], tt2)
            cols.append(f"{m1:5.0f} ± {s1:<4.0f} {b1_pct:+5.1f}% {m2:4.0f} ± {s2:<4.0f} {b2_pct:+5.1f}%")
        print(f"   {name:6s} {int(m.sum()):6d} {tt1.mean():5.0f}/{tt2.mean():<4.0f} " + " | ".join(cols))
    air = labels == 0
    first = next(iter(results.values()))
    print(f"   background: {int((first['t1'][air] > 0).sum())} of {int(air.sum())} air voxels with maps, "
          f"{int((first['t1'][~air] == 0).sum())} of {int((~air).sum())} tissue voxels without "
          f"(the noise-aware mask: property mask_threshold=auto)")
    for z in range(labels.shape[0]):
        _panel(truth, results, z, out / f"panel_slice{z}.png")
    print(f"   figures: {out / 'panel_slice0.png'} (B1 map, maps, error % with and without the B1 map), "
          f"{out / 'png'} (maps as the replay draws them)")
    print(f"total {time.perf_counter() - t0:.1f} s for {info.n_images} frame images "
          f"({info.n_slices} slice(s) × {info.n_frames} frames) and {info.b1_images} B1 map image(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="drone demo", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
