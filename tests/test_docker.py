"""The Docker images (``docker/gadgetron/Dockerfile``, ``docker/serve/Dockerfile``), checked as files.

Docker cannot run where this suite runs, so each Dockerfile is parsed (``dockerfile-parse`` for the
instructions; variable scopes, COPY sources and ``.dockerignore`` are resolved here the way the
Docker builder resolves them) and checked against the rest of the repository:

* only known instructions; every ``$VAR`` is an ARG or ENV in scope;
* base images pinned to a tag that is not ``latest`` (ARG defaults resolved);
* every COPY source exists in the build context (the repository root) and survives
  ``.dockerignore``, and the package's sources and data reach the folder pip installs from;
* torch pinned to the Makefile's ``TORCH_SPEC``; the constraints files are ``==`` pins that cover the
  package's requirements (the Gadgetron ones at the image's numpy 1.26 / ismrmrd 1.14 /
  gadgetron-python 1.4.1); the extras installed exist in ``setup.cfg``;
* an unprivileged USER after the last install step;
* the Gadgetron image ships every chain in ``xml_configs/`` to Gadgetron's config folder and keeps
  Gadgetron's entrypoint; the serve image runs ``drone serve`` (a subcommand of the real CLI
  parser) on the port it exposes and health-checks, and its health probe (run here against a
  loopback listener) sends an MRD CLOSE.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import json
import os
import posixpath
import re
import shlex
import socket
import struct
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from drone_core import __version__

REPO = Path(__file__).resolve().parents[1]
DOCKERIGNORE = REPO / ".dockerignore"
SETUP_CFG = REPO / "setup.cfg"
MAKEFILE = REPO / "Makefile"

#: image name → its Dockerfile; the build context of each is the repository root.
DOCKERFILES = {
    "gadgetron": REPO / "docker" / "gadgetron" / "Dockerfile",
    "serve": REPO / "docker" / "serve" / "Dockerfile",
}
#: image name → the pip constraints file its package install must use.
CONSTRAINTS = {
    "gadgetron": REPO / "docker" / "constraints-gadgetron.txt",
    "serve": REPO / "docker" / "constraints-serve.txt",
}
IMAGES = tuple(DOCKERFILES)

#: Instructions of the Dockerfile reference (MAINTAINER is deprecated, so not accepted).
KNOWN_INSTRUCTIONS = frozenset({
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
})
#: Instructions whose arguments the builder expands ``$VAR`` in (the others go to a shell, or not at all).
BUILDER_EXPANDED = frozenset({"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
                              "VOLUME", "WORKDIR", "ARG"})
#: Environment variables every base image has, which a Dockerfile may extend without declaring.
BASE_ENVIRONMENT = frozenset({"PATH"})
#: A RUN that puts software into the image.
INSTALL_STEP = re.compile(r"\bpip3?\s+install\b|\bapt-get\s+install\b|\b(conda|mamba)\s+install\b")

#: The official Gadgetron runtime images (the facts in shared/reference/gadgetron-facts.md).
GADGETRON_BASE_IMAGES = {
    "ghcr.io/gadgetron/gadgetron/gadgetron_ubuntu_rt_nocuda",
    "ghcr.io/gadgetron/gadgetron/gadgetron_ubuntu_rt_cuda",
}
GADGETRON_DEFAULT_BASE = "ghcr.io/gadgetron/gadgetron/gadgetron_ubuntu_rt_nocuda"
#: Where Gadgetron looks up ``-c NAME.xml`` (its conda environment's share/gadgetron/config).
GADGETRON_CONFIG_DIR = "/opt/conda/envs/gadgetron/share/gadgetron/config"
#: Versions in the Gadgetron image's conda environment that the gadget must run with.
GADGETRON_ENV_SERIES = {"numpy": "1.26", "ismrmrd": "1.14"}
GADGETRON_PYTHON_VERSION = "1.4.1"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: image → the module its build-time smoke check must import (what Gadgetron / ``drone serve`` runs).
SMOKE_IMPORTS = {"gadgetron": "drone_gadgets.gadget", "serve": "drone_gadgets.apps.server"}
#: The MRD streaming port (Gadgetron's default, and ``drone serve``'s).
MRD_PORT = 9002


# --------------------------------------------------------------------------------------------------
# A Dockerfile, resolved: stages, variable scopes, instructions
# --------------------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<modifier>:[-+][^}]*)?\}"
                       r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class Instruction:
    """One instruction: upper-case name, its arguments (continuation lines joined), 1-based line."""

    name: str
    value: str
    line: int


@dataclass
class Stage:
    """One ``FROM`` and what follows it, with the variables in scope after each instruction."""

    index: int
    base: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)
    #: variables visible to instruction i (ARG defaults and ENV values, resolved where possible)
    scopes: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    """A parsed Dockerfile: the global ARGs (before the first FROM) and its stages."""

    path: Path
    parser: DockerfileParser
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        """The stage that becomes the image."""
        return self.stages[-1]

    def instructions(self, name: str) -> list[tuple[Stage, Instruction, dict[str, str]]]:
        """Every instruction called ``name``, with its stage and the variables in scope there."""
        return [(stage, ins, scope) for stage in self.stages
                for ins, scope in zip(stage.instructions, stage.scopes) if ins.name == name]


def substitute(text: str, scope: dict[str, str]) -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+word}`` as the builder does;
    names not in ``scope`` are left as written."""

    def replace(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bare")
        modifier = m.group("modifier")
        if modifier and modifier.startswith(":-"):
            return scope.get(name) or modifier[2:]
        if modifier and modifier.startswith(":+"):
            return modifier[2:] if scope.get(name) else ""
        return scope.get(name, m.group(0))

    return _VARIABLE.sub(replace, text)


def referenced_variables(text: str) -> set[str]:
    """Names of the variables ``text`` refers to (``$(...)`` and shell specials like ``$?`` are not variables)."""
    return {m.group("braced") or m.group("bare") for m in _VARIABLE.finditer(text)}


def key_values(value: str) -> list[tuple[str, str | None]]:
    """``A=1 B="x y" C`` (ARG, ENV, LABEL arguments) → ``[(A, 1), (B, x y), (C, None)]``;
    the legacy ``ENV NAME value`` form is read too."""
    words = shlex.split(value, posix=True)
    if len(words) >= 2 and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        name, sep, val = word.partition("=")
        pairs.append((name, val if sep else None))
    return pairs


@lru_cache(maxsize=None)
def load_dockerfile(path: Path) -> Dockerfile:
    """Parse ``path`` with dockerfile-parse and resolve the variable scope of every instruction.

    Scopes follow the builder: ARGs before the first FROM are visible in FROM lines only, unless a
    stage re-declares them (``ARG NAME`` takes the global default); a stage's ARGs and ENVs are
    visible after their declaration; a stage built ``FROM`` an earlier stage inherits its ENVs.
    """
    parser = DockerfileParser(path=str(path))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    env_of_stage: dict[str, dict[str, str]] = {}
    scope: dict[str, str] = {}
    for entry in parser.structure:
        name = entry["instruction"].upper()
        if name == "COMMENT":
            continue
        ins = Instruction(name, entry["value"], entry["startline"] + 1)
        if name == "FROM":
            words = [w for w in substitute(ins.value, global_args).split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stage = Stage(len(stages), words[0], alias)
            stages.append(stage)
            scope = dict(env_of_stage.get(stage.base, {}))
            stage.instructions.append(ins)
            stage.scopes.append(dict(global_args))
            continue
        if not stages:
            if name == "ARG":
                for arg, default in key_values(ins.value):
                    global_args[arg] = substitute(default, global_args) if default is not None else ""
            continue
        stage = stages[-1]
        stage.instructions.append(ins)
        stage.scopes.append(dict(scope))
        if name == "ARG":
            for arg, default in key_values(ins.value):
                scope[arg] = substitute(default, scope) if default is not None else global_args.get(arg, "")
        elif name == "ENV":
            for var, val in key_values(ins.value):
                scope[var] = substitute(val or "", scope)
        if stage.alias:
            env_of_stage[stage.alias] = dict(scope)
    return Dockerfile(path, parser, global_args, stages)


def exec_form(value: str) -> list[str]:
    """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD; fails on the shell form."""
    words = json.loads(value)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), value
    return words


@dataclass
class Copy:
    """A COPY/ADD from the build context: its sources (context paths, unexpanded) and destination."""

    instruction: Instruction
    sources: list[str]
    dest: str
    from_stage: str | None


def parse_copy(ins: Instruction, scope: dict[str, str]) -> Copy:
    """Split a COPY/ADD into flags, sources and destination (shell or JSON form), variables expanded."""
    rest = ins.value.strip()
    flags: dict[str, str] = {}
    while m := re.match(r"--([A-Za-z-]+)(?:=(\S*))?\s+", rest):
        flags[m.group(1)] = m.group(2) or ""
        rest = rest[m.end():]
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest, posix=True)
    words = [substitute(w, scope) for w in words]
    assert len(words) >= 2, f"line {ins.line}: {ins.name} needs a source and a destination"
    return Copy(ins, words[:-1], words[-1], flags.get("from"))


def context_copies(dockerfile: Dockerfile, stage: Stage | None = None) -> list[Copy]:
    """The COPY/ADD instructions that read the build context (not ``--from`` another stage)."""
    copies = []
    for st in ([stage] if stage else dockerfile.stages):
        for ins, scope in zip(st.instructions, st.scopes):
            if ins.name in ("COPY", "ADD"):
                copy = parse_copy(ins, scope)
                if copy.from_stage is None:
                    copies.append(copy)
    return copies


def expand_source(pattern: str) -> list[Path]:
    """Context paths a COPY source names (Go ``filepath.Match`` globs; ``*`` does not cross ``/``)."""
    pattern = posixpath.normpath(pattern.lstrip("/"))
    if any(c in pattern for c in "*?["):
        return sorted(REPO.glob(pattern))
    path = REPO / pattern
    return [path] if path.exists() else []


def image_paths(copy: Copy) -> dict[str, str]:
    """Context path (relative, posix) → where it lands in the image. A directory's contents go to
    the destination; files go into it when it ends with ``/`` or there are several sources."""
    matches = [p for src in copy.sources for p in expand_source(src)]
    into_dir = copy.dest.endswith("/") or len(matches) > 1
    result = {}
    for path in matches:
        rel = path.relative_to(REPO).as_posix()
        if path.is_dir() or not into_dir:
            result[rel] = copy.dest.rstrip("/") or "/"
        else:
            result[rel] = posixpath.join(copy.dest, path.name)
    return result


@dataclass
class PackageInstall:
    """The RUN that pip-installs this package: source folder in the image, extras, constraints path."""

    stage: Stage
    instruction: Instruction
    source: str
    extras: list[str]
    constraints: str | None


_EXTRAS_TARGET = re.compile(r"^(?P<path>/[^\[\]]+)\[(?P<extras>[A-Za-z0-9_,.\-]+)\]$")


def package_installs(dockerfile: Dockerfile) -> list[PackageInstall]:
    """Every ``pip install "/path[extra,...]"`` of the package from a folder in the image."""
    found = []
    for stage, ins, scope in dockerfile.instructions("RUN"):
        words = shlex.split(substitute(ins.value, scope), posix=True)
        if not INSTALL_STEP.search(ins.value):
            continue
        constraints = None
        for i, word in enumerate(words[:-1]):
            if word in ("-c", "--constraint"):
                constraints = words[i + 1]
        for word in words:
            m = _EXTRAS_TARGET.match(word)
            if m:
                found.append(PackageInstall(stage, ins, m["path"].rstrip("/"), m["extras"].split(","), constraints))
    return found


# --------------------------------------------------------------------------------------------------
# .dockerignore, as the builder reads it (moby's patternmatcher)
# --------------------------------------------------------------------------------------------------

def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression: ``*`` and ``?`` stay within one path
    element, ``**`` spans any number (including none), ``[...]`` is a character class."""
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif c in "[]^-":
            out += c
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


@lru_cache(maxsize=None)
def ignore_patterns(text: str) -> tuple[tuple[re.Pattern[str], bool], ...]:
    """The patterns of a .dockerignore text, in order: (regex, is an exception ``!...``)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        if line and line != ".":
            patterns.append((_ignore_regex(line), exception))
    return tuple(patterns)


def is_ignored(rel_path: str, text: str | None = None) -> bool:
    """Whether the builder leaves the context path ``rel_path`` out: the last pattern that matches
    it, or one of its parent folders, decides."""
    if text is None:
        text = DOCKERIGNORE.read_text()
    parts = rel_path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts))] + [rel_path]
    ignored = False
    for regex, exception in ignore_patterns(text):
        if exception != ignored:
            continue
        if any(regex.match(c) for c in candidates):
            ignored = not exception
    return ignored


def kept_files(path: Path) -> list[str]:
    """Files under ``path`` (or ``path`` itself) that reach the build context."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return [p.relative_to(REPO).as_posix() for p in files if not is_ignored(p.relative_to(REPO).as_posix())]


# --------------------------------------------------------------------------------------------------
# setup.cfg, the Makefile, the constraints files, the CLI
# --------------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def setup_cfg() -> configparser.ConfigParser:
    """setup.cfg as setuptools reads it (no interpolation)."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(SETUP_CFG)
    return cfg


def cfg_list(section: str, option: str) -> list[str]:
    """A multi-line setup.cfg value as a list of its non-empty lines."""
    return [line.strip() for line in setup_cfg().get(section, option, fallback="").splitlines() if line.strip()]


def extras_require() -> dict[str, list[Requirement]]:
    """``[options.extras_require]``: extra name → its requirements."""
    section = "options.extras_require"
    return {name: [Requirement(r) for r in cfg_list(section, name)] for name in setup_cfg().options(section)}


def package_dirs() -> dict[str, Path]:
    """Every package in ``[options] packages`` → its folder in the repository (``package_dir`` applied)."""
    mapping = dict(line.replace(" ", "").split("=") for line in cfg_list("options", "package_dir"))
    result = {}
    for package in cfg_list("options", "packages"):
        top, *rest = package.split(".")
        result[package] = REPO.joinpath(mapping.get(top, top), *rest)
    return result


def makefile_torch_version() -> str:
    """The version in the Makefile's ``TORCH_SPEC ?= torch==X``."""
    m = re.search(r"^TORCH_SPEC\s*\?=\s*torch==(\S+)\s*$", MAKEFILE.read_text(), re.MULTILINE)
    assert m, "Makefile: no `TORCH_SPEC ?= torch==<version>` line"
    return m.group(1)


def read_constraints(path: Path) -> dict[str, str]:
    """A constraints file → canonical name → the version it pins; fails on anything but ``name==version``."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(?P<version>[^\s*;,]+)", line)
        assert m, f"{path.name}:{number}: {line!r} is not an exact `name==version` pin"
        try:
            Version(m["version"])
        except InvalidVersion:
            pytest.fail(f"{path.name}:{number}: {m['version']!r} is not a version")
        name = canonicalize_name(m["name"])
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = m["version"]
    return pins


def cli_subcommands() -> dict[str, argparse.ArgumentParser]:
    """The subcommands of the real ``drone`` parser (``drone_cli.main.build_parser``)."""
    from drone_cli.main import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "drone's parser should have one set of subcommands"
    return dict(actions[0].choices)


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------

@pytest.fixture(params=IMAGES)
def image(request: pytest.FixtureRequest) -> str:
    """Each image in turn."""
    return request.param


@pytest.fixture()
def dockerfile(image: str) -> Dockerfile:
    """The parsed Dockerfile of ``image``."""
    return load_dockerfile(DOCKERFILES[image])


@pytest.fixture()
def install(dockerfile: Dockerfile) -> PackageInstall:
    """The one pip install of this package in the Dockerfile."""
    installs = package_installs(dockerfile)
    assert len(installs) == 1, f"{dockerfile.path}: expected one `pip install \"/src[extra]\"`, found {len(installs)}"
    return installs[0]


# --------------------------------------------------------------------------------------------------
# Both images: syntax, variables, base images, build context
# --------------------------------------------------------------------------------------------------

def test_only_known_instructions(dockerfile: Dockerfile) -> None:
    """Every instruction is one the builder knows (a typo would fail only at build time)."""
    names = [e["instruction"].upper() for e in dockerfile.parser.structure if e["instruction"] != "COMMENT"]
    assert names and names[0] in ("FROM", "ARG"), "a Dockerfile starts with FROM (or ARGs for FROM)"
    unknown = sorted(set(names) - KNOWN_INSTRUCTIONS)
    assert not unknown, f"{dockerfile.path}: unknown instructions {unknown}"


def test_every_variable_is_declared(dockerfile: Dockerfile) -> None:
    """Each ``$VAR`` is an ARG or ENV in scope where it is used (FROM: the ARGs before it), so no
    value silently expands to an empty string."""
    problems = []
    for stage in dockerfile.stages:
        for ins, scope in zip(stage.instructions, stage.scopes):
            visible = set(scope) | BASE_ENVIRONMENT
            text = ins.value
            if ins.name == "ARG":  # the name being declared is not a use; its default is
                text = " ".join(v or "" for _, v in key_values(ins.value))
            missing = referenced_variables(text) - visible
            if missing:
                kind = "builder" if ins.name in BUILDER_EXPANDED else "shell"
                problems.append(f"line {ins.line} ({ins.name}, {kind}): {sorted(missing)}")
    assert not problems, f"{dockerfile.path}: undeclared variables:\n" + "\n".join(problems)


def test_base_images_are_pinned(image: str, dockerfile: Dockerfile) -> None:
    """Every external base image, with the ARG defaults resolved, has a fixed tag (not ``latest``) or
    a digest; the resolution agrees with dockerfile-parse's."""
    aliases = {s.alias for s in dockerfile.stages if s.alias}
    external = [s.base for s in dockerfile.stages if s.base not in aliases]
    assert external, "no external base image"
    library_view = [p for p in dockerfile.parser.parent_images if p not in aliases]
    assert external == library_view
    for ref in external:
        assert "$" not in ref, f"{ref}: a variable without a default"
        name, _, digest = ref.partition("@")
        repo, colon, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
        assert digest.startswith("sha256:") or (colon and tag), f"{ref}: no tag or digest"
        assert tag != "latest", f"{ref}: `latest` is not a pin"
        if image == "gadgetron":
            assert repo == GADGETRON_DEFAULT_BASE, f"{ref}: the default build is the official no-CUDA image"
            assert repo in GADGETRON_BASE_IMAGES
        else:
            assert repo == "python" and re.fullmatch(r"3\.\d+\.\d+-slim-bookworm", tag), \
                f"{ref}: expected a patch-level python:<x.y.z>-slim-bookworm tag"


def test_copy_sources_are_in_the_build_context(dockerfile: Dockerfile) -> None:
    """Every COPY/ADD source (globs expanded) exists in the repository and is not left out by
    .dockerignore (else ``docker build`` fails with "not found")."""
    copies = context_copies(dockerfile)
    assert copies
    for copy in copies:
        for source in copy.sources:
            assert "://" not in source, f"line {copy.instruction.line}: no remote sources"
            matches = expand_source(source)
            assert matches, f"line {copy.instruction.line}: {source} matches nothing in the repository"
            for path in matches:
                rel = path.relative_to(REPO).as_posix()
                assert not is_ignored(rel), f"line {copy.instruction.line}: {rel} is in .dockerignore"
                assert kept_files(path), f"line {copy.instruction.line}: nothing of {rel} reaches the context"


def test_package_sources_and_data_reach_the_install_folder(dockerfile: Dockerfile, install: PackageInstall) -> None:
    """pip installs from a folder holding pyproject.toml, setup.cfg, README.md (the long description)
    and every package folder under its setup.cfg path, with the package data (weights, schedules,
    phantom) not dropped by .dockerignore."""
    copied: dict[str, str] = {}
    for copy in context_copies(dockerfile, install.stage):
        if copy.instruction.line < install.instruction.line:
            copied.update(image_paths(copy))
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        assert copied.get(name) == f"{install.source}/{name}", f"{name} is not copied to {install.source}/"
    tops = {p.relative_to(REPO).parts[0] for p in package_dirs().values()}
    for top in sorted(tops):
        assert copied.get(top) == f"{install.source}/{top}", f"{top}/ is not copied to {install.source}/{top}"
    for package, folder in package_dirs().items():
        assert not is_ignored((folder / "__init__.py").relative_to(REPO).as_posix()), package
    section = "options.package_data"
    for package in setup_cfg().options(section):
        folder = package_dirs()[package]
        for pattern in setup_cfg().get(section, package).replace(",", " ").split():
            files = sorted(folder.glob(pattern))
            assert files, f"{package}: package data {pattern} missing from the repository"
            for f in files:
                assert not is_ignored(f.relative_to(REPO).as_posix()), f"{f} is in .dockerignore"


def test_torch_pinned_like_the_makefile(dockerfile: Dockerfile) -> None:
    """torch is installed as ``torch==${TORCH_VERSION}`` from ``${TORCH_INDEX}``, the ARG defaulting
    to the Makefile's version and the index to the CPU wheels."""
    expected = makefile_torch_version()
    torch_runs = []
    for stage, ins, scope in dockerfile.instructions("RUN"):
        if re.search(r"\btorch==", ins.value):
            torch_runs.append((ins, scope))
    assert len(torch_runs) == 1, "torch should be installed by exactly one RUN"
    ins, scope = torch_runs[0]
    assert "torch==${TORCH_VERSION}" in ins.value and "--index-url ${TORCH_INDEX}" in ins.value
    assert scope["TORCH_VERSION"] == expected, f"TORCH_VERSION={scope['TORCH_VERSION']}, Makefile: {expected}"
    assert scope["TORCH_INDEX"] == TORCH_CPU_INDEX


def test_installs_use_this_images_constraints(image: str, dockerfile: Dockerfile, install: PackageInstall) -> None:
    """The package install passes ``-c`` a file COPY'd there from this image's constraints file."""
    assert install.constraints, "the package install has no -c constraints"
    sources = {dest: src for copy in context_copies(dockerfile, install.stage)
               for src, dest in image_paths(copy).items()}
    assert sources.get(install.constraints) == CONSTRAINTS[image].relative_to(REPO).as_posix()


def test_extras_exist_in_setup_cfg(install: PackageInstall) -> None:
    """The extras installed (``gadgets``, ``serve``) are defined in ``[options.extras_require]``."""
    missing = sorted(set(install.extras) - set(extras_require()))
    assert not missing, f"extras {missing} are not in setup.cfg [options.extras_require]"


def test_runs_as_a_non_root_user_after_installing(dockerfile: Dockerfile) -> None:
    """In the final stage, a USER that is not root follows the last install step, and stays."""
    stage = dockerfile.final
    last_install = max((i for i, ins in enumerate(stage.instructions)
                        if (ins.name == "RUN" and INSTALL_STEP.search(ins.value))
                        or (ins.name == "COPY" and "--from=" in ins.value)), default=-1)
    users = [(i, substitute(ins.value, scope).strip())
             for i, (ins, scope) in enumerate(zip(stage.instructions, stage.scopes)) if ins.name == "USER"]
    after = [user for i, user in users if i > last_install]
    assert after, "no USER after the last install step"
    for user in after:
        name = user.split(":")[0]
        assert "$" not in name and name not in ("root", "0"), f"USER {user} runs as root"


def test_smoke_check_runs_as_the_runtime_user(image: str, dockerfile: Dockerfile) -> None:
    """A RUN after the final USER imports the module the image serves (an existing module) and
    starts the CLI, so a broken install or unreadable files fail the build, not the first scan."""
    stage = dockerfile.final
    last_user = max(i for i, ins in enumerate(stage.instructions) if ins.name == "USER")
    checks = " ".join(ins.value for ins in stage.instructions[last_user + 1:] if ins.name == "RUN")
    module = SMOKE_IMPORTS[image]
    assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
    assert re.search(rf"python[^\n]*-c\s+\"[^\"]*\bimport\b[^\"]*\b{re.escape(module)}\b", checks), \
        f"no smoke check imports {module}"
    assert re.search(r"(^|[\s/])drone( serve)? --help\b", checks), "no smoke check starts the CLI"


def test_labels_name_the_package_version(dockerfile: Dockerfile) -> None:
    """The OCI labels of the image give its title, licence and the package version."""
    labels: dict[str, str] = {}
    for _, ins, scope in dockerfile.instructions("LABEL"):
        labels.update({k: substitute(v or "", scope) for k, v in key_values(ins.value)})
    assert labels.get("org.opencontainers.image.version") == __version__
    assert labels.get("org.opencontainers.image.licenses") == setup_cfg().get("metadata", "license")
    assert labels.get("org.opencontainers.image.title")
    assert "$" not in labels.get("org.opencontainers.image.base.name", "$")


# --------------------------------------------------------------------------------------------------
# Constraints files
# --------------------------------------------------------------------------------------------------

def test_constraints_are_exact_pins(image: str) -> None:
    """Each line is ``name==version`` (no ranges, no wildcards), no name twice, and torch is left to
    the Dockerfile's TORCH_VERSION (two pins could disagree)."""
    pins = read_constraints(CONSTRAINTS[image])
    assert pins
    assert "torch" not in pins


def test_constraints_cover_the_requirements(install: PackageInstall, image: str) -> None:
    """Every requirement of the package and of the extras installed (those setup.cfg defines; a
    missing extra fails test_extras_exist_in_setup_cfg) is pinned, at a version it accepts."""
    pins = read_constraints(CONSTRAINTS[image])
    requirements = [Requirement(r) for r in cfg_list("options", "install_requires")]
    extras = extras_require()
    for extra in install.extras:
        requirements += extras.get(extra, [])
    for req in requirements:
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in pins, f"{req} is not pinned in {CONSTRAINTS[image].name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} does not satisfy {req}"


def test_gadgetron_constraints_keep_the_image_environment() -> None:
    """numpy 1.26.x, ismrmrd 1.14.x and gadgetron-python 1.4.1: what the Gadgetron image's conda
    environment has and Gadgetron's Python side was built with."""
    pins = read_constraints(CONSTRAINTS["gadgetron"])
    for name, series in GADGETRON_ENV_SERIES.items():
        assert name in pins, f"{name} is not pinned"
        assert Version(pins[name]).release[:2] == Version(series).release, f"{name}=={pins[name]}, image: {series}.x"
    assert pins.get("gadgetron") == GADGETRON_PYTHON_VERSION


# --------------------------------------------------------------------------------------------------
# The Gadgetron image
# --------------------------------------------------------------------------------------------------

def test_gadgetron_ships_every_chain() -> None:
    """All of xml_configs/*.xml go to Gadgetron's config folder, each a version-2 chain."""
    dockerfile = load_dockerfile(DOCKERFILES["gadgetron"])
    shipped = {}
    for copy in context_copies(dockerfile):
        if copy.dest.rstrip("/") == GADGETRON_CONFIG_DIR:
            shipped.update(image_paths(copy))
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "xml_configs").glob("*.xml")}
    assert expected and set(shipped) == expected
    for rel, dest in shipped.items():
        assert dest == f"{GADGETRON_CONFIG_DIR}/{Path(rel).name}"
        root = ET.parse(REPO / rel).getroot()
        assert root.tag == "configuration", rel
        assert (root.findtext("version") or "").strip() == "2", f"{rel}: not configuration format version 2"


def test_gadgetron_keeps_its_entrypoint_and_port() -> None:
    """No ENTRYPOINT/CMD of ours: Gadgetron's entrypoint starts ``gadgetron`` (port 9002); the
    default build takes CPU wheels of torch."""
    dockerfile = load_dockerfile(DOCKERFILES["gadgetron"])
    stage = dockerfile.final
    assert not [ins for ins in stage.instructions if ins.name in ("ENTRYPOINT", "CMD")]
    exposed = {substitute(p, s) for _, ins, s in dockerfile.instructions("EXPOSE") for p in ins.value.split()}
    assert exposed == {str(MRD_PORT)}


def test_gadgetron_home_is_the_users_writable_home() -> None:
    """Gadgetron writes its storage under $HOME/.gadgetron: HOME is the home folder the image creates
    for the runtime user."""
    dockerfile = load_dockerfile(DOCKERFILES["gadgetron"])
    stage = dockerfile.final
    env = stage.scopes[-1]  # the variables in scope at the last instruction
    useradd = [ins.value for ins in stage.instructions if ins.name == "RUN" and "useradd" in ins.value]
    assert len(useradd) == 1
    m = re.search(r"--home-dir\s+(\S+)", useradd[0])
    assert m and env.get("HOME") == m.group(1)
    assert f"{m.group(1)}/.gadgetron" in useradd[0], "the storage folder should be made for the user"


# --------------------------------------------------------------------------------------------------
# The serve image
# --------------------------------------------------------------------------------------------------

def _serve_stage() -> tuple[Dockerfile, Stage]:
    """The serve Dockerfile and its final (runtime) stage."""
    dockerfile = load_dockerfile(DOCKERFILES["serve"])
    return dockerfile, dockerfile.final


def _only(stage: Stage, name: str) -> Instruction:
    """The one instruction called ``name`` in ``stage``."""
    found = [ins for ins in stage.instructions if ins.name == name]
    assert len(found) == 1, f"expected one {name}, found {len(found)}"
    return found[0]


def test_serve_entrypoint_is_the_drone_console_script() -> None:
    """``ENTRYPOINT ["drone", "serve"]``, and ``drone`` is setup.cfg's console script for
    ``drone_cli.main:main``."""
    _, stage = _serve_stage()
    assert exec_form(_only(stage, "ENTRYPOINT").value) == ["drone", "serve"]
    scripts = dict(line.replace(" ", "").split("=", 1) for line in cfg_list("options.entry_points", "console_scripts"))
    assert scripts.get("drone") == "drone_cli.main:main"
    from drone_cli import main as cli_main

    assert callable(cli_main.main)


def test_serve_is_a_subcommand_of_the_cli() -> None:
    """``serve`` is registered in the real ``drone`` parser."""
    assert "serve" in cli_subcommands(), f"drone subcommands: {sorted(cli_subcommands())}"


def test_serve_cmd_is_accepted_by_the_cli() -> None:
    """The image's CMD are valid ``drone serve`` options, listening on all interfaces, MRD port."""
    from drone_cli.main import build_parser

    _, stage = _serve_stage()
    cmd = exec_form(_only(stage, "CMD").value)
    try:
        args = build_parser().parse_args(["serve", *cmd])
    except SystemExit as exc:  # argparse's way of rejecting
        pytest.fail(f"`drone serve {' '.join(cmd)}` is rejected by the CLI (exit {exc.code})")
    assert args.host == "0.0.0.0"
    assert int(args.port) == MRD_PORT


def test_serve_ports_agree() -> None:
    """EXPOSE, the CMD's ``--port`` and the health check's port are the same port."""
    dockerfile, stage = _serve_stage()
    exposed = {substitute(p, s) for _, ins, s in dockerfile.instructions("EXPOSE") for p in ins.value.split()}
    cmd = exec_form(_only(stage, "CMD").value)
    assert "--port" in cmd
    port = cmd[cmd.index("--port") + 1]
    assert exposed == {port} == {str(MRD_PORT)}
    health = _only(stage, "HEALTHCHECK")
    health_scope = stage.scopes[stage.instructions.index(health)]
    assert health_scope.get("HEALTHCHECK_PORT") == port
    assert "HEALTHCHECK_PORT" in health.value


def _health_probe() -> list[str]:
    """The serve image's HEALTHCHECK command (exec form), checking its timing flags."""
    _, stage = _serve_stage()
    flags, _, command = _only(stage, "HEALTHCHECK").value.partition("CMD")
    assert re.search(r"--interval=\d+s", flags) and re.search(r"--timeout=\d+s", flags)
    words = exec_form(command.strip())
    assert words[:2] == ["python", "-c"], "the probe runs with the image's python (no curl in slim)"
    return words


def _run_probe(port: int) -> int:
    """Run the health probe's code here against ``127.0.0.1:port``; its exit status."""
    code = _health_probe()[2]
    env = {**os.environ, "HEALTHCHECK_PORT": str(port)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30).returncode


def test_serve_health_probe_sends_an_mrd_close() -> None:
    """The probe connects to HEALTHCHECK_PORT and sends an MRD CLOSE (an empty session for the
    server, not a failed connection in its log every 30 s), and fails when nothing listens."""
    from drone_gadgets.wire.mrd import MrdId

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(20)
        port = listener.getsockname()[1]
        received: list[bytes] = []

        def accept() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                chunks = []
                while chunk := conn.recv(64):
                    chunks.append(chunk)
                received.append(b"".join(chunks))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        assert _run_probe(port) == 0
        thread.join(20)
    assert received == [struct.pack("<H", MrdId.CLOSE)]
    assert _run_probe(port) != 0, "the probe must fail once the port is closed"


def test_serve_runtime_settings() -> None:
    """SIGTERM stops the server (it handles it: graceful shutdown), and Python output is unbuffered
    (logs appear as they happen)."""
    _, stage = _serve_stage()
    assert _only(stage, "STOPSIGNAL").value.strip() == "SIGTERM"
    assert stage.scopes[-1].get("PYTHONUNBUFFERED") == "1"


# --------------------------------------------------------------------------------------------------
# .dockerignore
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", "runs/x/model.safetensors", "demo_out/maps.h5", "scan.h5",
    "drone_core/__pycache__/epg.cpython-311.pyc", "gadgets/__pycache__/gadget.cpython-310.pyc",
    "drone_gadgetron.egg-info/PKG-INFO", "build/lib/drone_core/epg.py", ".pytest_cache/README.md",
    "tests/test_docker.py", "docs/MODEL.md",
])
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    """Local environments, results, caches and build output never enter the build context."""
    assert is_ignored(path)


@pytest.mark.parametrize("pattern, path, ignored", [
    ("**/*.h5", "a/b/c.h5", True), ("**/*.h5", "c.h5", True), ("*.h5", "a/c.h5", False),
    ("build", "build/lib/x.py", True), ("build", "gadgets/build.py", False),
    ("*.egg-info", "x.egg-info/PKG-INFO", True), ("runs", "training/runs.py", False),
    ("**/__pycache__", "a/__pycache__/b.pyc", True), ("docs\n!docs/keep.md", "docs/keep.md", False),
])
def test_dockerignore_matching(pattern: str, path: str, ignored: bool) -> None:
    """The matcher these tests use follows Docker's rules (parent folders, ``**``, ``!`` exceptions)."""
    assert is_ignored(path, pattern) is ignored
