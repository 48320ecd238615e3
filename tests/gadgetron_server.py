"""A real Gadgetron server for the tests marked ``gadgetron`` (a session fixture), or a skip saying why not.

Where the server comes from, in order:

1. ``DRONE_GADGETRON``: the path of a ``gadgetron`` executable (``.ci/run`` sets it from
   ``../shared/gadgetron/install.sh``). Set but not an executable file: the tests fail (a broken CI
   setting must not pass as skips).
2. ``gadgetron`` on PATH.
3. ``../shared/gadgetron/install.sh`` beside the repository, when that folder exists: run once (it
   unpacks a Gadgetron 4.7.2 build into ``~/.local`` and apt-installs its runtime libraries, which
   needs root); if it fails the tests skip with its message.

Otherwise the tests skip ("no Gadgetron: …"), so ``make test`` passes on a machine without one.

The server runs as ``gadgetron -p <free port> -G <home> -W <workdir> --disable_storage true`` with this
interpreter's ``bin`` first on PATH (Gadgetron starts the first ``python``, then ``python3``, on PATH for
an ``<execute type="python">`` node), logging to a file in a temporary folder. ``<home>`` is a temporary
copy of the installation made of symbolic links, whose ``share/gadgetron/config`` also holds this
repository's ``xml_configs/*.xml``, so chains can be named (CONFIG_FILE) without writing into the
installation. The server is stopped (its process group: the connection processes Gadgetron forks and
their Python children too) at the end of the session. When a test that uses it fails, the tail of the
server's log is added to the report (:func:`pytest_runtest_makereport`, imported by ``conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

__all__ = ["GadgetronServer", "find_gadgetron", "start_gadgetron", "gadgetron_server", "gadgetron_with_storage",
           "ListenerRun", "with_connect_listener",
           "pytest_runtest_makereport",
           "REPO", "SHARED_GADGETRON"]

REPO = Path(__file__).resolve().parents[1]
#: The folder ``.ci/run`` installs from (beside the repository).
SHARED_GADGETRON = REPO.parent / "shared" / "gadgetron"
#: install.sh unpacks ~100 MB (xz) and may apt-install libraries: generous.
INSTALL_TIMEOUT_S = 900.0
#: From start to a port that accepts (an -O0 build starts in well under a second; a loaded machine is slower).
START_TIMEOUT_S = 60.0
#: SIGTERM, then SIGKILL after this long.
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 80
_ENV = "DRONE_GADGETRON"


def find_gadgetron() -> tuple[Path | None, str]:
    """``(executable, where it came from)``, or ``(None, the reason there is none)``.

    Raises:
        ValueError: ``DRONE_GADGETRON`` is set but is not an executable file.
    """
    named = os.environ.get(_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ValueError(f"{_ENV}={named!r}: expected the path of the gadgetron executable, which is not "
                             f"{'there' if not path.exists() else 'an executable file'}")
        return path, _ENV
    on_path = shutil.which("gadgetron")
    if on_path:
        return Path(on_path), "PATH"
    install = SHARED_GADGETRON / "install.sh"
    if not install.is_file():
        return None, (f"no Gadgetron: set {_ENV} to the gadgetron executable, put gadgetron on PATH, or provide "
                      f"{SHARED_GADGETRON}/install.sh")
    try:
        done = subprocess.run(["bash", str(install)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"{install} did not finish within {INSTALL_TIMEOUT_S:g} s"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip() or done.stdout.strip() or "no output")[-600:]
        return None, f"{install} failed (exit {done.returncode}): {why}"
    exe = Path(lines[-1].strip())
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        return None, f"{install} printed {str(exe)!r}, which is not an executable file"
    return exe, str(install)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _link_tree(real: Path, home: Path, keep: tuple[str, ...]) -> Path:
    """``home`` mirroring ``real`` by symbolic links, except the path ``keep`` (its parents become real
    folders), which is returned as an empty real folder to fill."""
    home.mkdir(parents=True, exist_ok=True)
    if not keep:
        return home
    for entry in real.iterdir() if real.is_dir() else ():
        if entry.name != keep[0]:
            (home / entry.name).symlink_to(entry)
    return _link_tree(real / keep[0], home / keep[0], keep[1:])


def make_home(exe: Path, home: Path, chains: Iterable[Path]) -> Path:
    """A Gadgetron home for ``exe`` in ``home``: its installation by links, plus ``chains`` in the config folder.

    Returns:
        the config folder.
    """
    real = exe.resolve().parent.parent
    config = _link_tree(real, home, ("share", "gadgetron", "config"))
    for entry in (real / "share" / "gadgetron" / "config").glob("*"):
        (config / entry.name).symlink_to(entry)
    for chain in chains:
        target = config / chain.name
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copyfile(chain, target)
    return config


@dataclass
class GadgetronServer:
    """A running Gadgetron server (see the module docstring)."""

    exe: Path
    port: int
    home: Path
    log_path: Path
    process: subprocess.Popen

    @property
    def alive(self) -> bool:
        """The server process still runs."""
        return self.process.poll() is None

    def log_text(self) -> str:
        """The server's whole log so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        """Bytes of log so far (an offset for :meth:`log_since`)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        """The log written after byte ``offset``."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def descendants(self) -> list[int]:
        """Processes below the server (its connection processes and their children), from /proc."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found: list[int] = []
        frontier = [self.process.pid]
        while frontier:
            pid = frontier.pop()
            children = [c for c, p in parents.items() if p == pid]
            found += children
            frontier += children
        return found

    def python_children(self) -> list[int]:
        """The gadget processes Gadgetron started (command line holding ``drone_gadgets.gadget``)."""
        out = []
        for pid in self.descendants():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ")
            except OSError:
                continue
            if b"drone_gadgets.gadget" in cmdline:
                out.append(pid)
        return out

    def accepts(self, timeout_s: float = 2.0) -> bool:
        """A TCP connection to the port succeeds (Gadgetron logs the probe as a connection that ended early)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after :data:`STOP_TIMEOUT_S`."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # forked connection processes left behind, if any
        self.process.wait(timeout=STOP_TIMEOUT_S)


def start_gadgetron(exe: Path, folder: Path, *, chains: Iterable[Path] = (), attempts: int = 3,
                    storage_url: str | None = None) -> GadgetronServer:
    """Start ``exe`` on a free port (see the module docstring); wait until the port accepts.

    ``storage_url``: run with ``--storage_address <url>`` (a storage server, e.g. :class:`mrd_storage.StorageServer`)
    instead of ``--disable_storage true``.

    Raises:
        RuntimeError: the server exited or did not accept within :data:`START_TIMEOUT_S` (with its log tail).
    """
    home = folder / "home"
    make_home(exe, home, chains)
    workdir = folder / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    last = ""
    for attempt in range(attempts):
        port = _free_port()
        log_path = folder / f"gadgetron-{attempt}.log"
        with open(log_path, "wb") as log:
            storage = ["--disable_storage", "true"] if storage_url is None else ["--storage_address", storage_url]
            process = subprocess.Popen([str(exe), "-p", str(port), "-G", str(home), "-W", str(workdir), *storage],
                                       stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, cwd=folder, start_new_session=True)
        server = GadgetronServer(exe, port, home, log_path, process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and server.alive:
            if server.accepts(timeout_s=1.0):
                return server
            time.sleep(0.2)
        last = server.log_tail(30)
        server.stop()
    raise RuntimeError(f"{exe} did not start ({attempts} attempts); its log ends:\n{last}")


@dataclass
class ListenerRun:
    """What :func:`with_connect_listener` saw: the send's result, the rewritten chain, the documented command
    (its port rewritten), and the listener's stdout, stderr and exit status."""

    result: Any
    chain: Path
    command: str
    stdout: str
    stderr: str
    returncode: int | None


def with_connect_listener(chain_name: str, folder: Path, send: Any, timeout_s: float = 120.0) -> ListenerRun:
    """Run a ``<connect>`` chain as its comment says: start the Python side with the ``python -c "…"`` command
    the chain file documents, on a free port (the file's 18000 rewritten, in the chain and the command), call
    ``send(chain_path)``, then collect the listener (it serves one scan and exits)."""
    import re

    port = _free_port()
    text = (REPO / "xml_configs" / chain_name).read_text(encoding="utf-8")
    assert 'port="18000"' in text, chain_name
    chain = folder / chain_name
    chain.write_text(text.replace('port="18000"', f'port="{port}"'), encoding="utf-8")
    documented = re.search(r'python -c "([^"]+)"', text)
    assert documented, f"{chain_name} documents the command that starts the Python side"
    code = documented.group(1).replace("listen(18000,", f"listen({port},")
    listener = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=folder)
    try:
        result = send(chain)
        out, err = listener.communicate(timeout=timeout_s)
    finally:
        if listener.poll() is None:
            listener.kill()
            out, err = listener.communicate()
    return ListenerRun(result, chain, documented.group(1), out, err, listener.returncode)


def _gadgetron_or_skip() -> tuple[Path, str]:
    """:func:`find_gadgetron`'s server, or the test skipped (none) or failed (a broken ``DRONE_GADGETRON``)."""
    try:
        exe, where = find_gadgetron()
    except ValueError as exc:
        pytest.fail(str(exc))
    if exe is None:
        pytest.skip(where)
    return exe, where


@pytest.fixture(scope="session")
def gadgetron_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GadgetronServer]:
    """The real Gadgetron server of the session (skips without one; module docstring)."""
    exe, where = _gadgetron_or_skip()
    server = start_gadgetron(exe, tmp_path_factory.mktemp("gadgetron"), chains=sorted((REPO / "xml_configs").glob(
        "*.xml")))
    sys.stderr.write(f"\nGadgetron {exe} (from {where}) on port {server.port}, log {server.log_path}\n")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gadgetron_with_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GadgetronServer, Any]]:
    """A second real Gadgetron, run against an in-memory stand-in of the MRD storage server
    (:class:`mrd_storage.StorageServer`), as a scanner's Gadgetron runs with its storage server:
    ``NoiseAdjustGadget`` stores a scan's noise covariance there. ``(server, storage)``."""
    from mrd_storage import StorageServer

    exe, where = _gadgetron_or_skip()
    with StorageServer() as storage:
        server = start_gadgetron(exe, tmp_path_factory.mktemp("gadgetron_storage"),
                                 chains=sorted((REPO / "xml_configs").glob("*.xml")), storage_url=storage.url)
        try:
            yield server, storage
        finally:
            server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test that used the server gets the tail of the server's log in its report."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("gadgetron_server")
    if report.failed and isinstance(server, GadgetronServer):
        report.sections.append((f"Gadgetron log ({server.log_path}, last {LOG_TAIL_LINES} lines)",
                                server.log_tail()))
