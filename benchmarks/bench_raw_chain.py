"""Raw EPI-MRF k-space through a real Gadgetron's GRAPPA EPI chain and the DRONE gadget: time in all, per
slice, and where it goes; the same scan through the images path for comparison.

Run from the repository root (needs a Gadgetron 4.x server binary and its ``gadgetron_ismrmrd_client``)::

    .venv/bin/python benchmarks/bench_raw_chain.py --gadgetron ~/.local/gadgetron-4.7.2/bin/gadgetron
    .venv/bin/python benchmarks/bench_raw_chain.py --slices 2 --matrix 64    # a smoke run (~1 min)

Options: ``--gadgetron PATH`` (default ``$DRONE_GADGETRON``, else ``gadgetron`` on PATH), ``--slices``
(default 20), ``--matrix`` (default 128), ``--noise`` (default 0.005), ``--coils`` (8), ``--acceleration``
(2), ``--json OUT``, ``--keep DIR`` (keep the files).

What it does, on one machine (the server is started here, with this interpreter's ``bin`` first on PATH,
``--disable_storage true``, so the raw scan has no noise scan — see ``drone_gadgets.scans.raw``):

1. ``simulate`` — ``write_raw_scan``: a ``--slices``-slice brain phantom (the seven MNI152 slices of
   :func:`~drone_core.phantoms.brain_phantom`, repeated), 25 frames, ``--coils`` coils, GRAPPA R, 0.5 %
   noise; and the same phantom as image frames with the same noise level (``write_phantom_scan``).
2. ``grappa`` — ``gadgetron_ismrmrd_client -f raw.h5 -C <chain>`` with ``drone_grappa_epi.xml`` cut
   before the Python node (Gadgetron's GRAPPA EPI reconstruction alone; the frames come back).
3. ``raw chain`` — the same with the whole ``drone_grappa_epi.xml``: frames → maps.
4. ``images path`` — ``drone send`` of the image frames to ``drone_images.xml`` on the same server.

``gadget`` = raw chain − grappa (the gadget's share of the raw chain, its Python start-up included);
per slice = each time / slices. Map quality of both paths, per tissue (one pixel eroded off each
tissue's mask): T1 and T2 mean against the truth; sd over the tissue; and the noise sd — the sd of the
map minus its noise-free twin (the same scan simulated without noise, sent the same way, untimed). The
noise-sd ratio raw/images is what the raw chain (GRAPPA's √R·g, coil combination, filters) costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def grappa_only_chain(text: str) -> str:
    """``drone_grappa_epi.xml`` without its ``<external>`` node: Gadgetron's GRAPPA EPI recon alone."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    stream = root.find("stream")
    nodes = [] if stream is None else stream.findall("external")
    if stream is None or not nodes:
        raise ValueError("no <external> node in the chain's <stream>")
    for node in nodes:
        stream.remove(node)
    return ET.tostring(root, encoding="unicode")


def run_client(client: Path, port: int, raw: Path, chain: Path, out: Path, attempts: int = 3) -> float:
    """Send a raw file with Gadgetron's client; seconds. Retries its occasional start-up crash (rc 134)."""
    for attempt in range(attempts):
        if out.exists():
            out.unlink()
        t0 = time.perf_counter()
        proc = subprocess.run([str(client), "-p", str(port), "-f", str(raw), "-C", str(chain), "-o", str(out),
                               "-G", "out"], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode == 0 and out.exists():
            return seconds
        print(f"client attempt {attempt + 1}: rc {proc.returncode}: {proc.stderr.strip()[-300:]}", file=sys.stderr)
    raise RuntimeError(f"gadgetron_ismrmrd_client failed {attempts} times")


def tissue_stats(maps: dict[int, np.ndarray], truth: dict[str, np.ndarray],
                 clean: dict[int, np.ndarray]) -> dict[str, Any]:
    """Per tissue: T1/T2 mean, bias against the truth, sd over the tissue (partial volume and the
    reconstruction's filtering included), and the noise sd: sd of (map − its noise-free twin)."""
    from scipy import ndimage

    labels = truth["labels"].astype(int)
    out: dict[str, Any] = {}
    for name, label in (("CSF", 1), ("GM", 2), ("WM", 3)):
        mask = np.stack([ndimage.binary_erosion(labels[s] == label) for s in range(labels.shape[0])])
        if not mask.any():
            continue
        row: dict[str, Any] = {"voxels": int(mask.sum())}
        for key, series in (("t1", 100), ("t2", 101)):
            got, want = maps[series][mask], truth[key][mask]
            diff = got - clean[series][mask]
            row[key] = {"mean": float(got.mean()), "truth": float(want.mean()),
                        "bias_pct": float(100 * (got.mean() / want.mean() - 1)),
                        "sd_pct": float(100 * got.std() / got.mean()),
                        "noise_sd_pct": float(100 * diff.std() / clean[series][mask].mean())}
        m0 = maps[102][mask] / truth["m0"][mask]
        row["m0_over_truth"] = float(m0.mean())
        out[name] = row
    return out


def read_maps(path: Path, group: str) -> dict[int, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        return {s: f[f"{group}/image_{s}/data"][:].reshape(-1, *f[f"{group}/image_{s}/data"].shape[-2:])
                for s in (100, 101, 102)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gadgetron", type=Path, default=None)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--noise", type=float, default=0.005)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--acceleration", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args(argv)

    from drone_core.phantoms import Phantom, brain_phantom
    from drone_core.schedule import default_schedule
    from drone_gadgets.scans.raw import RawProtocol, write_raw_scan
    from drone_gadgets.scans.images import write_phantom_scan
    from drone_gadgets.scans.truth import read_truth

    exe = args.gadgetron or (Path(os.environ["DRONE_GADGETRON"]) if os.environ.get("DRONE_GADGETRON") else None)
    if exe is None:
        found = shutil.which("gadgetron")
        exe = Path(found) if found else None
    if exe is None or not exe.is_file():
        parser.error("no Gadgetron: give --gadgetron PATH (or set DRONE_GADGETRON)")
    client = exe.parent / "gadgetron_ismrmrd_client"
    work = Path(tempfile.mkdtemp(prefix="bench_raw_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"slices": args.slices, "matrix": args.matrix, "frames": 25, "coils": args.coils,
                               "acceleration": args.acceleration, "noise": args.noise,
                               "load_before": os.getloadavg(), "cpus": os.cpu_count()}

    base = brain_phantom(7, (args.matrix, args.matrix))
    labels = np.concatenate([base.labels] * (-(-args.slices // 7)))[: args.slices]
    phantom = Phantom(labels, base.tissues, name=f"MNI152 brain, {args.slices} slices (7 repeated)",
                      fov_mm=base.fov_mm, slice_thickness_mm=base.slice_thickness_mm)
    schedule = default_schedule()
    raw, images = work / "raw.h5", work / "images.h5"
    t0 = time.perf_counter()
    info = write_raw_scan(raw, phantom, schedule, noise_level=args.noise, seed=1, overwrite=True,
                          protocol=RawProtocol(n_coils=args.coils, acceleration=args.acceleration, noise_scan=False))
    results["simulate_raw_s"] = time.perf_counter() - t0
    results["raw_acquisitions"] = info.n_acquisitions
    results["raw_bytes"] = raw.stat().st_size
    t0 = time.perf_counter()
    write_phantom_scan(images, phantom, schedule, noise_level=args.noise, seed=1, overwrite=True)
    results["simulate_images_s"] = time.perf_counter() - t0
    raw_clean, images_clean = work / "raw_clean.h5", work / "images_clean.h5"
    write_raw_scan(raw_clean, phantom, schedule, noise_level=0.0, overwrite=True, with_truth=False,
                   protocol=RawProtocol(n_coils=args.coils, acceleration=args.acceleration, noise_scan=False))
    write_phantom_scan(images_clean, phantom, schedule, noise_level=0.0, overwrite=True, with_truth=False)

    chain_text = (REPO / "xml_configs" / "drone_grappa_epi.xml").read_text(encoding="utf-8")
    grappa_chain, full_chain = work / "grappa_only.xml", work / "drone_grappa_epi.xml"
    grappa_chain.write_text(grappa_only_chain(chain_text), encoding="utf-8")
    full_chain.write_text(chain_text, encoding="utf-8")

    port = free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    log = open(work / "gadgetron.log", "w")
    server = subprocess.Popen([str(exe), "-p", str(port), "--disable_storage", "true"], stdout=log,
                              stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        results["grappa_s"] = run_client(client, port, raw, grappa_chain, work / "frames.h5")
        results["raw_chain_s"] = run_client(client, port, raw, full_chain, work / "maps_raw.h5")
        for source, out, key in ((images, "maps_images.h5", "images_path_s"),
                                 (images_clean, "maps_images_clean.h5", None)):
            t0 = time.perf_counter()
            proc = subprocess.run([str(Path(sys.executable).parent / "drone"), "send", str(source), str(work / out),
                                   "--port", str(port), "--config-file",
                                   str(REPO / "xml_configs" / "drone_images.xml"), "--quiet"],
                                  capture_output=True, text=True, env=env)
            if key:
                results[key] = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"drone send failed: {proc.stderr}")
        run_client(client, port, raw_clean, full_chain, work / "maps_raw_clean.h5")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    results["gadget_s"] = results["raw_chain_s"] - results["grappa_s"]
    for key in ("grappa_s", "raw_chain_s", "gadget_s", "images_path_s"):
        results[key.replace("_s", "_per_slice_s")] = results[key] / args.slices
    truth = read_truth(raw)
    results["raw_maps"] = tissue_stats(read_maps(work / "maps_raw.h5", "out"), truth,
                                       read_maps(work / "maps_raw_clean.h5", "out"))
    results["images_maps"] = tissue_stats(read_maps(work / "maps_images.h5", "dataset"), truth,
                                          read_maps(work / "maps_images_clean.h5", "dataset"))
    results["noise_sd_ratio_raw_over_images"] = {
        name: {k: results["raw_maps"][name][k]["noise_sd_pct"] / results["images_maps"][name][k]["noise_sd_pct"]
               for k in ("t1", "t2")} for name in results["raw_maps"]}
    results["load_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
