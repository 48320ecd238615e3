"""Soak: hundreds of slices through one ``drone serve`` process; its memory must stay flat.

Starts ``drone serve`` (its own process, port chosen by the system), then sends the same
brain-phantom scan (``--per-connection`` slices of 25 frames, 1 % noise, the default schedule) over
and over, ``--concurrency`` connections at a time, until ``--slices`` slices have been
reconstructed. After every connection the server's resident memory (``VmRSS`` of
``/proc/<pid>/status``) is sampled. Reported (stdout, JSON with ``--json``): the RSS after the
warm-up connections, at the end, its peak, the growth from warm-up to the end, and the least-squares
slope of RSS against slices after the warm-up (MiB per 100 slices); also slices/s. Every reply is
checked: ``3 × per-connection`` map images and no ERROR.

Run (Linux; quiet machine)::

    .venv/bin/python benchmarks/bench_serve_soak.py [--slices 400] [--per-connection 5] [--matrix 128]
        [--concurrency 2] [--workers 2] [--warmup 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from drone_core.phantoms import brain_phantom
from drone_core.schedule import default_schedule
from drone_gadgets.files import h5io
from drone_gadgets.wire.mrd import ConfigFile, Header, encode
from drone_gadgets.scans.images import write_phantom_scan


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux ``/proc``)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def make_stream(n_slices: int, matrix: int) -> bytes:
    """CONFIG_FILE, HEADER, the frames of ``n_slices`` brain slices, CLOSE — encoded once."""
    schedule = default_schedule()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.h5"
        write_phantom_scan(path, brain_phantom(n_slices, (matrix, matrix)), schedule, noise_level=0.01, seed=0)
        header = h5io.read_xml_header(path, "dataset")
        images = h5io.read_images(path, "dataset", ["image_1"])
    return b"".join([encode(ConfigFile("drone_images")), encode(Header(header))]
                    + [encode(im) for im in images] + [encode(None)])


def start_server(workers: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "drone_cli.main", "serve", "--port", "0", "--workers", str(workers),
                             "--set", "device=cpu", "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("drone serve did not start")
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain the log
            return proc, int(match.group(1))


def one_connection(port: int, stream: bytes, expected_images: int) -> None:
    """Send the stream, read the reply (ismrmrd's ProtocolDeserializer, or the package's stand-in
    where ismrmrd has none: 1.14.0/1.14.1), check it."""
    import socket

    import ismrmrd

    from drone_gadgets.wire.mrd import serialization

    ProtocolDeserializer = serialization().ProtocolDeserializer

    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        result: dict[str, object] = {}

        def receive() -> None:
            with sock.makefile("rb") as f:
                items = list(ProtocolDeserializer(f).deserialize())
            result["images"] = sum(isinstance(i, ismrmrd.Image) for i in items)
            result["errors"] = [i for i in items if isinstance(i, str)]

        reader = threading.Thread(target=receive)
        reader.start()
        sock.sendall(stream)
        reader.join(120)
    if result.get("errors") or result.get("images") != expected_images:
        raise RuntimeError(f"bad reply: {result}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=400, help="slices in total")
    p.add_argument("--per-connection", type=int, default=5, help="slices per connection (1-7)")
    p.add_argument("--matrix", type=int, default=128, help="in-plane matrix (square)")
    p.add_argument("--concurrency", type=int, default=2, help="connections at a time")
    p.add_argument("--workers", type=int, default=2, help="the server's workers")
    p.add_argument("--warmup", type=int, default=10, help="connections before the reference RSS")
    p.add_argument("--json", type=Path, help="write the results there")
    args = p.parse_args(argv)

    stream = make_stream(args.per_connection, args.matrix)
    connections = -(-args.slices // args.per_connection)
    proc, port = start_server(args.workers)
    samples: list[tuple[int, float]] = [(0, rss_mib(proc.pid))]
    done = [0]
    lock = threading.Lock()

    def task(_: int) -> None:
        one_connection(port, stream, 3 * args.per_connection)
        with lock:
            done[0] += 1
            samples.append((done[0] * args.per_connection, rss_mib(proc.pid)))

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(task, range(connections)))
        seconds = time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()
    samples.sort()
    warm = [s for s in samples if s[0] >= args.warmup * args.per_connection]
    x = np.array([s[0] for s in warm], float)
    y = np.array([s[1] for s in warm], float)
    slope = float(np.polyfit(x, y, 1)[0] * 100) if len(warm) > 2 else float("nan")
    result = {
        "slices": done[0] * args.per_connection, "connections": done[0], "matrix": args.matrix,
        "per_connection": args.per_connection, "concurrency": args.concurrency, "workers": args.workers,
        "seconds": round(seconds, 2), "slices_per_second": round(done[0] * args.per_connection / seconds, 1),
        "rss_start_mib": round(samples[0][1], 1), "rss_after_warmup_mib": round(warm[0][1], 1),
        "rss_end_mib": round(samples[-1][1], 1), "rss_peak_mib": round(max(s[1] for s in samples), 1),
        "growth_after_warmup_mib": round(samples[-1][1] - warm[0][1], 1),
        "slope_mib_per_100_slices": round(slope, 2), "server_exit_status": proc.returncode,
        "cpu": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
