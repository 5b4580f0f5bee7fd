"""The daemon's image, built from deploy/Dockerfile without a container engine.

There is no Docker engine (nor buildah) on the machines this project is
developed and tested on, so this module does what ``docker build -f
deploy/Dockerfile .`` does, with debootstrap, chroot and pip, and packs the
result with the test bed's OCI writer (tracer_testbed.images)::

    python -m tracer_testbed.daemon_image [--output FILE]    # or scripts/build-image.sh

The Dockerfile stays the one description of the image: this module reads
from it the Debian suite (``FROM debian:<suite>-slim``), the packages of its
``apt-get install``, the virtualenv command, the ``pip install`` of the project,
every other RUN command, each COPY, ENV, WORKDIR, ENTRYPOINT and CMD, and
fails on an instruction it does not know.  Where it differs:

* The Debian root comes from ``debootstrap --variant=minbase --include=…``
  (Depends only, like ``--no-install-recommends``) from the mirror that
  apt's sources on this machine name, then is slimmed as Debian's ``-slim``
  images are (no docs but copyrights, no man pages, no locales, no apt
  lists).  debootstrap runs in a private mount namespace (``unshare
  --mount``): the /proc and /sys it mounts in the new root vanish with it.
* The project's Python dependencies are downloaded on this machine (``pip
  download``, through pip's own configuration) and installed offline in
  the root with ``chroot``; the install of the project (pip builds its
  wheel from the copied sources and installs that) runs offline too
  (``--no-deps --no-index --no-build-isolation``).
* The image has two layers: the *base* (Debian, the packages, the
  virtualenv with the dependencies) and the *project* (what the COPY lines
  bring, the project's install, the entrypoint).  The base is cached with
  its root directory, keyed by suite, packages and dependencies, so that a
  change of the tracer's sources rebuilds only the small project layer: it
  is installed into the cached root, read off as the difference, and
  removed again.

Everything is cached under $TRACER_IMAGE_CACHE (default
/var/cache/tracer/images): debootstrap's downloaded packages, the base, and
the finished archives, each named after a digest of its inputs.  A second
build of the same inputs returns the cached archive at once.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tracer_testbed import host
from tracer_testbed.images import (
    DEFAULT_ENV,
    ImageError,
    ImageRecipe,
    Layer,
    tree_layer,
    tree_paths,
    write_oci_archive,
)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = Path("deploy/Dockerfile")
PYPROJECT = Path("pyproject.toml")
ENV_CACHE = "TRACER_IMAGE_CACHE"
ENV_MIRROR = "TRACER_DEBIAN_MIRROR"
DEFAULT_CACHE = Path("/var/cache/tracer/images")
APT_SOURCES = Path("/etc/apt")
# What `docker build -t tracer:<version>` names the image, fully qualified:
# the DaemonSet's "tracer:<version>" means the same to containerd's CRI.
IMAGE_REPOSITORY = "docker.io/library/tracer"
# Bump when the steps that make the base change, so that cached bases are rebuilt.
BASE_FORMAT = 1
KEEP_BASES = 2
KEEP_ARCHIVES = 3

_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_DPKG_ARCH = "$(dpkg --print-architecture)"
# Not in an image: runc mounts /dev, /proc and /sys; dev holds debootstrap's device nodes.
_SKIP_CONTENTS_OF = ("dev", "proc", "sys")
# What Debian's -slim images leave out (their dpkg path-exclude), and what
# the Dockerfile removes after apt-get.
_SLIM_EMPTIED = ("usr/share/doc", "usr/share/groff", "usr/share/info", "usr/share/linda",
                 "usr/share/lintian", "usr/share/locale", "usr/share/man", "var/lib/apt/lists",
                 "var/cache/apt")
_SLIM_KEPT = re.compile(r"^usr/share/doc/[^/]+/copyright$")
_SLIM_DPKG_CONFIG = """\
# as in Debian's -slim images: no documentation but the copyright files
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
_CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
_WHEELS_IN_ROOT = "tmp/tracer-wheels"


# ------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Copy:
    """One source of a COPY line, with Docker's meaning of it."""

    source: str  # relative to the build context (the repository)
    destination: str  # absolute
    into: bool  # the destination is a directory (".", "dir/", several sources)

    def target(self, context: Path) -> str:
        """Where the source lands: a directory's contents go into the
        destination; a file goes into it, or becomes it."""
        if self.into and not (context / self.source).is_dir():
            return os.path.join(self.destination, os.path.basename(self.source.rstrip("/")))
        return self.destination


@dataclass(frozen=True)
class DockerRecipe:
    """What deploy/Dockerfile says the image is."""

    suite: str  # Debian suite of the FROM image, e.g. "bookworm"
    packages: tuple[str, ...]  # apt-get install
    venv_command: tuple[str, ...]  # python3 -m venv ...
    project_install: tuple[str, ...]  # <venv>/bin/pip install ... <source dir>
    commands: tuple[str, ...] = ()  # any other RUN command, run as it is after the install
    copies: tuple[Copy, ...] = ()
    env: tuple[str, ...] = DEFAULT_ENV
    working_dir: str = "/"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    @property
    def project_dir(self) -> str:
        return self.project_install[-1]


class DockerfileError(ImageError):
    """deploy/Dockerfile says something this builder does not do."""


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if pending + line:
            yield pending + line
        pending = ""
    if pending:
        yield pending


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def _json_form(instruction: str, value: str) -> tuple[str, ...]:
    try:
        argv = json.loads(value)
    except json.JSONDecodeError:
        argv = None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise DockerfileError(f"{instruction} must be in JSON form: {value}")
    return tuple(argv)


def read_dockerfile(text: str, arch: str) -> DockerRecipe:
    """The image as deploy/Dockerfile describes it, for a Debian architecture."""
    fields: dict = {"commands": [], "copies": []}
    env = dict(item.split("=", 1) for item in DEFAULT_ENV)
    workdir = "/"
    for line in _logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            match = re.fullmatch(r"debian:([a-z]+)(?:-slim)?", rest)
            if not match:
                raise DockerfileError(f"not a Debian base image: {rest}")
            fields["suite"] = match.group(1)
        elif instruction == "ARG":
            continue  # build arguments (DEBIAN_FRONTEND) mean nothing to debootstrap
        elif instruction == "RUN":
            for command in (part.strip() for part in rest.split("&&")):
                _read_run_command(command.replace(_DPKG_ARCH, arch), fields)
        elif instruction == "WORKDIR":
            workdir = os.path.join(workdir, rest)
        elif instruction == "COPY":
            *sources, destination = shlex.split(rest)
            into = destination.endswith("/") or destination in (".", "./") or len(sources) > 1
            target = os.path.normpath(os.path.join(workdir, destination))
            fields["copies"].extend(Copy(source, target, into) for source in sources)
        elif instruction == "ENV":
            for item in shlex.split(rest):
                if "=" not in item:
                    raise DockerfileError(f"ENV needs KEY=value: {rest}")
                key, value = item.split("=", 1)
                env[key] = _expand(value, env)
        elif instruction in ("ENTRYPOINT", "CMD"):
            fields[instruction.lower()] = _json_form(instruction, rest)
        else:
            raise DockerfileError(f"instruction not supported by the builder: {line}")
    missing = {"suite", "packages", "venv_command", "project_install"} - fields.keys()
    if missing:
        raise DockerfileError(f"the Dockerfile does not say {', '.join(sorted(missing))}")
    return DockerRecipe(**{**fields, "commands": tuple(fields["commands"]), "copies": tuple(fields["copies"]),
                           "env": tuple(f"{k}={v}" for k, v in env.items()), "working_dir": workdir})


def _read_run_command(command: str, fields: dict) -> None:
    argv = shlex.split(command)
    if argv[:2] == ["apt-get", "update"] or command == "rm -rf /var/lib/apt/lists/*":
        return  # debootstrap fetches the lists; the base never keeps them
    if argv[:2] == ["apt-get", "install"]:
        fields["packages"] = tuple(a for a in argv[2:] if not a.startswith("-"))
    elif argv[1:3] == ["-m", "venv"]:
        fields["venv_command"] = tuple(argv)
    elif "pip" in os.path.basename(argv[0]) and "install" in argv and argv[-1].startswith("/"):
        if "-e" in argv or "--editable" in argv:
            raise DockerfileError(f"the image installs the project's wheel, not an editable tree: {command}")
        fields["project_install"] = tuple(argv)
    else:
        fields["commands"].append(command)


# ------------------------------------------------------------- inputs


def debian_arch() -> str:
    machine = platform.machine()
    return _DEBIAN_ARCH.get(machine, machine)


def apt_sources(apt_dir: Path = APT_SOURCES) -> list[tuple[str, list[str], list[str]]]:
    """(URI, suites, components) of every enabled "deb" source apt reads."""
    found: list[tuple[str, list[str], list[str]]] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in (f for f in files if f.is_file()):
        for line in path.read_text().splitlines():
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()  # type: ignore[assignment]
            if len(line) >= 3 and line[0] == "deb":
                found.append((line[1], [line[2]], list(line[3:])))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            entry: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                entry[key.strip().lower()] = value.strip()
            if "deb" in entry.get("types", "").split() and entry.get("enabled", "yes").lower() != "no":
                for uri in entry.get("uris", "").split():
                    found.append((uri, entry.get("suites", "").split(), entry.get("components", "").split()))
    return found


def debian_mirror(suite: str, apt_dir: Path = APT_SOURCES) -> str:
    """The mirror this machine's apt uses for ``suite`` (main), or $TRACER_DEBIAN_MIRROR."""
    if os.environ.get(ENV_MIRROR):
        return os.environ[ENV_MIRROR]
    for uri, suites, components in apt_sources(apt_dir):
        if suite in suites and "main" in components:
            return uri
    raise ImageError(f"no apt source for Debian {suite} main in {apt_dir}; set ${ENV_MIRROR}")


def python_dependencies(context: Path) -> tuple[str, ...]:
    """The project's runtime requirements, from pyproject.toml."""
    project = tomllib.loads((context / PYPROJECT).read_text())["project"]
    return tuple(project["dependencies"])


def project_version(context: Path) -> str:
    return tomllib.loads((context / PYPROJECT).read_text())["project"]["version"]


def canonical_reference(reference: str) -> str:
    """containerd's full name for an image reference ("tracer:0.1.0" is docker.io/library/tracer:0.1.0)."""
    first, _, rest = reference.partition("/")
    if not rest:
        return f"docker.io/library/{reference}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{reference}"
    return reference


def default_cache() -> Path:
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE)


def _digest(document: object) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _copied_files(recipe: DockerRecipe, context: Path) -> Iterator[tuple[str, Path]]:
    """(path in the image, file in the context) of everything the COPY lines bring."""
    for copy in recipe.copies:
        source = context / copy.source
        if not source.exists():
            raise DockerfileError(f"COPY source missing: {copy.source}")
        target = copy.target(context)
        if not source.is_dir():
            yield target, source
            continue
        for name in tree_paths(source):
            if "__pycache__" in name.split("/"):  # deploy/Dockerfile.dockerignore
                continue
            yield f"{target}/{name}", source / name


def _files_digest(recipe: DockerRecipe, context: Path) -> str:
    hashed = hashlib.sha256()
    for target, source in _copied_files(recipe, context):
        hashed.update(target.encode() + b"\0")
        if source.is_symlink():
            hashed.update(b"l" + os.readlink(source).encode())
        elif source.is_file():
            hashed.update(b"x" if os.access(source, os.X_OK) else b"f")
            hashed.update(hashlib.sha256(source.read_bytes()).digest())
    return hashed.hexdigest()[:16]


# ------------------------------------------------------------- building


@dataclass(frozen=True)
class BuiltImage:
    name: str  # fully qualified, e.g. docker.io/library/tracer:0.1.0
    archive: Path  # the OCI image-layout tarball
    cached: bool  # taken from the cache, not built now
    seconds: float

    @property
    def size(self) -> int:
        return self.archive.stat().st_size


@dataclass
class _Base:
    """The cached base: its root directory and its layer."""

    directory: Path
    layer: Layer | None = None

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def layer_file(self) -> Path:
        return self.directory / "layer.tar.gz"

    @property
    def record(self) -> Path:  # written last: a base without it is unfinished
        return self.directory / "layer.json"

    @property
    def dirty_marker(self) -> Path:  # the project stage is (or was, when it crashed) in the root
        return self.directory / "dirty"

    def usable(self) -> bool:
        return self.record.exists() and not self.dirty_marker.exists() and self.rootfs.is_dir()

    def load(self) -> None:
        self.layer = Layer.from_json(json.loads(self.record.read_text()))


@dataclass
class Builder:
    """Builds (or finds in the cache) the daemon's image archive."""

    context: Path = REPO
    cache: Path = field(default_factory=default_cache)
    arch: str = field(default_factory=debian_arch)

    def recipe(self) -> DockerRecipe:
        return read_dockerfile((self.context / DOCKERFILE).read_text(), self.arch)

    @property
    def image_name(self) -> str:
        return f"{IMAGE_REPOSITORY}:{project_version(self.context)}"

    def base_inputs(self, recipe: DockerRecipe) -> dict:
        return {"format": BASE_FORMAT, "suite": recipe.suite, "arch": self.arch, "packages": recipe.packages,
                "venv": recipe.venv_command, "dependencies": python_dependencies(self.context)}

    def archive_inputs(self, recipe: DockerRecipe, base: Layer) -> dict:
        builder_sources = [Path(__file__), Path(__file__).with_name("images.py")]
        return {"base": base.digest, "recipe": recipe, "name": self.image_name,
                "files": _files_digest(recipe, self.context),
                "builder": [hashlib.sha256(p.read_bytes()).hexdigest() for p in builder_sources]}

    def build(self) -> BuiltImage:
        started = time.monotonic()
        recipe = self.recipe()
        self.cache.mkdir(parents=True, exist_ok=True)
        with self._locked():
            base = _Base(self.cache / f"base-{_digest(self.base_inputs(recipe))}")
            if not base.usable():
                self._build_base(base, recipe)
            base.load()
            assert base.layer is not None
            archive = self.cache / f"tracer-daemon-{_digest(self.archive_inputs(recipe, base.layer))}.oci.tar"
            cached = archive.exists()
            if not cached:
                self._build_archive(base, recipe, archive)
            for used in (archive, base.directory):
                os.utime(used)
            self._prune()
        built = BuiltImage(self.image_name, archive, cached, time.monotonic() - started)
        log.info("image %s: %s (%.0f MiB, %s in %.1f s)", built.name, archive, built.size / 2**20,
                 "cached" if cached else "built", built.seconds)
        return built

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.cache / "lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another build in %s", self.cache)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ---- the base: Debian, the packages, the virtualenv with the dependencies

    def _build_base(self, base: _Base, recipe: DockerRecipe) -> None:
        _remove_tree(base.directory)
        base.directory.mkdir(parents=True)
        mirror = debian_mirror(recipe.suite)
        log.info("debootstrap %s (%s) from %s with %s", recipe.suite, self.arch, mirror, " ".join(recipe.packages))
        debs = self.cache / "debs"
        debs.mkdir(exist_ok=True)
        # A private mount namespace: whatever debootstrap mounts in the new
        # root (proc, sys) goes away with it, even when it fails.
        _run(["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
              f"--arch={self.arch}", f"--cache-dir={debs}", "--include=" + ",".join(recipe.packages),
              recipe.suite, str(base.rootfs), mirror])
        _slim(base.rootfs)
        _chroot(base.rootfs, list(recipe.venv_command))
        self._install_dependencies(base, recipe)
        log.info("packing the base layer")
        layer = tree_layer(base.rootfs, base.layer_file, skip_contents_of=_SKIP_CONTENTS_OF,
                           created_by=f"debootstrap {recipe.suite} + {' '.join(recipe.venv_command)} + dependencies")
        base.record.write_text(json.dumps(layer.to_json()))

    def _install_dependencies(self, base: _Base, recipe: DockerRecipe) -> None:
        """pip downloads here, with this machine's pip configuration; the root installs offline."""
        requirements = [*python_dependencies(self.context), "setuptools>=68"]  # the build backend, for -e
        version = _chroot(base.rootfs, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        wheels = base.rootfs / _WHEELS_IN_ROOT
        wheels.mkdir(parents=True)
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
              "--python-version", version.strip(), "--dest", str(wheels), *requirements])
        venv = _venv_dir(recipe)
        _chroot(base.rootfs, [f"{venv}/bin/pip", "install", "--quiet", "--no-index", "--no-cache-dir",
                              "--find-links", f"/{_WHEELS_IN_ROOT}", *requirements])
        shutil.rmtree(wheels)

    # ---- the project layer, and the archive

    def _build_archive(self, base: _Base, recipe: DockerRecipe, archive: Path) -> None:
        assert base.layer is not None
        project = self._project_layer(base, recipe, archive.with_suffix(".layer.tar.gz"))
        try:
            image = ImageRecipe(name=self.image_name, entries=[], entrypoint=list(recipe.entrypoint),
                                cmd=list(recipe.cmd), env=recipe.env, working_dir=recipe.working_dir,
                                layers=(base.layer, project))
            partial = archive.with_suffix(".partial")
            with partial.open("wb") as out:
                write_oci_archive(image, out)
            partial.rename(archive)
        finally:
            project.path.unlink(missing_ok=True)

    def _project_layer(self, base: _Base, recipe: DockerRecipe, out: Path) -> Layer:
        """Install the project into the base's root, read it off as a layer, take it out again."""
        root = base.rootfs
        before = _snapshot(root)
        base.dirty_marker.touch()
        try:
            for target, source in _copied_files(recipe, self.context):
                _copy_into(root, target, source)
            _chroot(root, [*recipe.project_install[:2], "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", *recipe.project_install[2:]])
            for command in recipe.commands:
                _chroot(root, ["sh", "-c", command], PYTHONDONTWRITEBYTECODE="1")
            added, changed, deleted = _difference(before, _snapshot(root))
            log.info("project layer: %d new, %d changed, %d deleted paths", len(added), len(changed), len(deleted))
            return tree_layer(root, out, paths=added + changed, deleted=deleted,
                              created_by=" ".join(recipe.project_install))
        finally:
            added, changed, deleted = _difference(before, _snapshot(root))
            if changed or deleted:
                log.warning("the project stage changed the base's own files (%s); the base is rebuilt next time",
                            ", ".join((changed + deleted)[:5]))
            else:  # only new files: removing them gives the base back as it was
                for name in sorted(added, key=lambda n: -n.count("/")):
                    path = root / name
                    path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
                base.dirty_marker.unlink()

    def _prune(self) -> None:
        """Keep the most recently used bases and archives only."""
        bases = sorted(self.cache.glob("base-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in bases[KEEP_BASES:]:
            _remove_tree(old)
        archives = sorted(self.cache.glob("tracer-daemon-*.oci.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in archives[KEEP_ARCHIVES:]:
            old.unlink()


def _venv_dir(recipe: DockerRecipe) -> str:
    return recipe.venv_command[-1]


def _slim(root: Path) -> None:
    """As Debian's -slim images and the Dockerfile's cleanup leave a root."""
    for directory in _SLIM_EMPTIED:
        top = root / directory
        for name in sorted(tree_paths(top), key=lambda n: -n.count("/")) if top.is_dir() else []:
            path = top / name
            if _SLIM_KEPT.match(f"{directory}/{name}"):
                continue
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            else:
                path.unlink()
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/dpkg/dpkg.cfg.d/slim").write_text(_SLIM_DPKG_CONFIG)
    # debootstrap copies this machine's; the runtime mounts the pod's own
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).write_text("")


def _snapshot(root: Path) -> dict[str, tuple]:
    """What identifies each path's state: type, mode, owner and, but for directories, size and mtime."""
    state = {}
    skipped = tuple(f"{name}/" for name in _SKIP_CONTENTS_OF)
    for name in tree_paths(root):
        if name.startswith(skipped):
            continue
        st = os.lstat(root / name)
        key: tuple = (st.st_mode, st.st_uid, st.st_gid)
        if not os.path.isdir(root / name) or os.path.islink(root / name):
            key += (st.st_size, st.st_mtime_ns, os.readlink(root / name) if os.path.islink(root / name) else "")
        state[name] = key
    return state


def _difference(before: dict[str, tuple], after: dict[str, tuple]) -> tuple[list[str], list[str], list[str]]:
    """(added, changed, deleted) paths between two snapshots."""
    added = sorted(set(after) - set(before))
    changed = sorted(name for name in set(after) & set(before) if after[name] != before[name])
    return added, changed, sorted(set(before) - set(after))


def _copy_into(root: Path, target: str, source: Path) -> None:
    """COPY: as root, keeping the mode and mtime (parent directories 0755)."""
    path = root / target.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        path.symlink_to(os.readlink(source))
    elif source.is_dir():
        path.mkdir(exist_ok=True)
        shutil.copystat(source, path)
    else:
        shutil.copy2(source, path)
    os.lchown(path, 0, 0)


def _remove_tree(directory: Path) -> None:
    """rm -r, but never across a mount point (it would empty the host's /proc or /dev)."""
    if not directory.exists():
        return
    mounted = host.mounts_under(directory.resolve())
    if mounted:
        raise ImageError(f"refusing to remove {directory}: mounts below it: {', '.join(map(str, mounted))}")
    shutil.rmtree(directory)


def _chroot(root: Path, argv: list[str], **env: str) -> str:
    return _run(["chroot", str(root), *argv], env={**_CHROOT_ENV, **env})


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    log.debug("running %s", shlex.join(argv))
    result = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise ImageError(f"{shlex.join(argv)} failed with status {result.returncode}:\n" + "\n".join(output[-30:]))
    return result.stdout


def build(context: Path = REPO, cache: Path | None = None) -> BuiltImage:
    """Build the daemon's image from deploy/Dockerfile, or take it from the cache."""
    return Builder(context, cache or default_cache()).build()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tracer_testbed.daemon_image", description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, help="also copy the OCI archive here")
    parser.add_argument("--cache", type=Path, default=None, help=f"cache directory (${ENV_CACHE}, {DEFAULT_CACHE})")
    parser.add_argument("--import-to", metavar="SOCKET", help="import it into this containerd's k8s.io namespace")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if os.geteuid() != 0:
        parser.error("needs root (debootstrap, chroot)")
    built = build(cache=args.cache)
    if args.output:
        shutil.copyfile(built.archive, args.output)
    if args.import_to:
        from tracer_testbed.images import import_archive

        import_archive(Path(args.import_to), built.archive, built.name)
    print(json.dumps({"name": built.name, "archive": str(args.output or built.archive), "bytes": built.size,
                      "cached": built.cached, "seconds": round(built.seconds, 1)}))


if __name__ == "__main__":
    main()
