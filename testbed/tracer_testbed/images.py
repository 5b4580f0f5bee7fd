"""Small OCI images built on this machine, since no registry is reachable.

Two images are enough for the test bed:

* ``localhost/pause:3.9``, the pod sandbox image: a static build of
  ``pause.c`` next to this file.
* ``localhost/busybox:1``, the app image: the host's static busybox with
  symlinks for the applets the tests use.

Each is written as an OCI image-layout tarball in pure Python, byte for byte
the same on every build (fixed mtimes, owners and gzip header), cached under
the test bed's directory, and imported into containerd's ``k8s.io``
namespace, the one the CRI plugin serves. CRI only finds images by fully
qualified names, hence the ``localhost/`` prefix.

The same writer packs bigger images (the daemon's, see
tracer_testbed.daemon_image): an image may also stack layers that were
written to disk beforehand, e.g. from a directory tree (:func:`tree_layer`);
those are streamed, never held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

PAUSE_IMAGE = "localhost/pause:3.9"
BUSYBOX_IMAGE = "localhost/busybox:1"

# The namespace in which containerd's CRI plugin keeps its images.
CRI_NAMESPACE = "k8s.io"

PAUSE_SOURCE = Path(__file__).with_name("pause.c")
HOST_BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "true", "false", "ls", "dd", "head", "tail")

_MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
_MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
_MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
_REF_NAME = "org.opencontainers.image.ref.name"

# Any fixed time works; the Unix epoch keeps archives reproducible.
_FIXED_MTIME = 0
# Layers from directory trees are big: a faster level, nearly as small as 9.
TREE_GZIP_LEVEL = 3
# An OCI layer marks a file of a lower layer as deleted with this prefix.
_WHITEOUT = ".wh."

DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)

_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class ImageError(RuntimeError):
    """Building or importing a test bed image failed."""


@dataclass(frozen=True)
class LayerEntry:
    """One directory, regular file or symlink in an image layer."""

    path: str  # relative to the image root, e.g. "bin/sh"
    kind: bytes  # tarfile.DIRTYPE, REGTYPE or SYMTYPE
    mode: int = 0o755
    content: bytes = b""
    link_target: str = ""


def directory(path: str, mode: int = 0o755) -> LayerEntry:
    return LayerEntry(path=path, kind=tarfile.DIRTYPE, mode=mode)


def regular_file(path: str, content: bytes, mode: int = 0o755) -> LayerEntry:
    return LayerEntry(path=path, kind=tarfile.REGTYPE, mode=mode, content=content)


def symlink(path: str, target: str) -> LayerEntry:
    return LayerEntry(path=path, kind=tarfile.SYMTYPE, mode=0o777, link_target=target)


@dataclass(frozen=True)
class Layer:
    """A layer already written to disk: a gzip-compressed tar."""

    path: Path
    digest: str  # "sha256:..." of the compressed file: the blob's name
    diff_id: str  # "sha256:..." of the uncompressed tar: the image config's
    size: int
    created_by: str = "tracer_testbed.images"

    def to_json(self) -> dict:
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_json(cls, fields: dict) -> Layer:
        return cls(**{**fields, "path": Path(fields["path"])})


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into an image: layers written beforehand, then ``entries``.

    ``entries`` become one more layer on top, built in memory; an image of
    ``layers`` alone leaves them empty.
    """

    name: str  # fully qualified, e.g. "localhost/pause:3.9"
    entries: list[LayerEntry]
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: tuple[str, ...] = DEFAULT_ENV
    working_dir: str = "/"
    layers: tuple[Layer, ...] = ()

    @property
    def tag(self) -> str:
        return self.name.rpartition(":")[2]


@dataclass(frozen=True)
class _Blob:
    """A content-addressed blob of the image layout, in memory or in a file."""

    media_type: str
    digest: str
    size: int
    data: bytes = b""
    path: Path | None = None

    @classmethod
    def of(cls, media_type: str, data: bytes) -> _Blob:
        return cls(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)

    @classmethod
    def of_layer(cls, layer: Layer) -> _Blob:
        return cls(_MEDIA_LAYER, layer.digest, layer.size, path=layer.path)

    def open(self) -> BinaryIO:
        return self.path.open("rb") if self.path is not None else io.BytesIO(self.data)

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _json_bytes(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _tar_member(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = _FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _layer_tar(entries: list[LayerEntry]) -> bytes:
    """An uncompressed layer tar with entries sorted, so parents come first."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=lambda e: e.path):
            info = _tar_member(entry.path, entry.kind, entry.mode, len(entry.content), entry.link_target)
            tar.addfile(info, io.BytesIO(entry.content) if entry.content else None)
    return buffer.getvalue()


def _gzip(data: bytes) -> bytes:
    # No file name and a fixed mtime in the gzip header keep digests stable.
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=_FIXED_MTIME) as compressed:
        compressed.write(data)
    return buffer.getvalue()


def _host_platform() -> dict[str, str]:
    machine = platform.machine()
    return {"architecture": _GO_ARCH.get(machine, machine), "os": "linux"}


def _image_config(recipe: ImageRecipe, layers: list[tuple[str, str]]) -> _Blob:
    """The image config; ``layers`` are (diff_id, created_by), bottom first."""
    config = {
        **_host_platform(),
        "config": {
            "Entrypoint": recipe.entrypoint or None,
            "Cmd": recipe.cmd or None,
            "Env": list(recipe.env),
            "WorkingDir": recipe.working_dir,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id for diff_id, _ in layers]},
        "history": [{"created_by": created_by, "created": "1970-01-01T00:00:00Z"} for _, created_by in layers],
        "created": "1970-01-01T00:00:00Z",
    }
    return _Blob.of(_MEDIA_CONFIG, _json_bytes(config))


def write_oci_archive(recipe: ImageRecipe, out: BinaryIO) -> None:
    """Write the OCI image-layout tarball (oci-layout, index.json, blobs) of a recipe."""
    layer_blobs = [_Blob.of_layer(layer) for layer in recipe.layers]
    history = [(layer.diff_id, layer.created_by) for layer in recipe.layers]
    if recipe.entries or not recipe.layers:
        layer_tar = _layer_tar(recipe.entries)
        layer_blobs.append(_Blob.of(_MEDIA_LAYER, _gzip(layer_tar)))
        history.append(("sha256:" + hashlib.sha256(layer_tar).hexdigest(), "tracer_testbed.images"))
    config = _image_config(recipe, history)
    manifest = _Blob.of(
        _MEDIA_MANIFEST,
        _json_bytes(
            {
                "schemaVersion": 2,
                "mediaType": _MEDIA_MANIFEST,
                "config": config.descriptor(),
                "layers": [blob.descriptor() for blob in layer_blobs],
            }
        ),
    )
    manifest_descriptor = {
        **manifest.descriptor(),
        "platform": _host_platform(),
        # A tag-only reference, as the image-layout spec suggests; the
        # repository is given to `ctr images import --base-name`.
        "annotations": {_REF_NAME: recipe.tag},
    }
    index = {"schemaVersion": 2, "mediaType": _MEDIA_INDEX, "manifests": [manifest_descriptor]}

    files = [
        ("oci-layout", _Blob.of("", _json_bytes({"imageLayoutVersion": "1.0.0"}))),
        ("index.json", _Blob.of("", _json_bytes(index))),
    ]
    blobs = {blob.digest: blob for blob in (config, *layer_blobs, manifest)}  # a blob is stored once
    files += [(f"blobs/sha256/{digest.removeprefix('sha256:')}", blob) for digest, blob in blobs.items()]
    _write_tar_of_blobs(files, out)


def oci_archive(recipe: ImageRecipe) -> bytes:
    """The OCI image-layout tarball of a recipe, in memory (small images)."""
    buffer = io.BytesIO()
    write_oci_archive(recipe, buffer)
    return buffer.getvalue()


def _write_tar_of_blobs(files: list[tuple[str, _Blob]], out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for directory_name in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_member(directory_name, tarfile.DIRTYPE, 0o755))
        for name, blob in files:
            with blob.open() as data:
                tar.addfile(_tar_member(name, tarfile.REGTYPE, 0o644, blob.size), data)


class _HashingWriter(io.RawIOBase):
    """Passes writes on to ``sink``, counting and hashing them."""

    def __init__(self, sink: BinaryIO) -> None:
        super().__init__()
        self.sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def tree_layer(
    root: Path,
    out: Path,
    paths: Iterable[str] | None = None,
    deleted: Iterable[str] = (),
    skip_contents_of: Iterable[str] = (),
    created_by: str = "tracer_testbed.images",
) -> Layer:
    """Write a layer of the files under ``root`` to ``out`` (gzip) and describe it.

    Every file, or only ``paths`` (relative to ``root``; their parent
    directories come along), each with its owner, mode and mtime; hard
    links stay links.  ``deleted`` paths become whiteouts, hiding them in
    the layers below.  The contents (not the directories themselves) of
    ``skip_contents_of`` are left out, e.g. device nodes in "dev".
    """
    skipped = tuple(f"{name.strip('/')}/" for name in skip_contents_of)
    if paths is None:
        names = [name for name in tree_paths(root) if not name.startswith(skipped)]
    else:
        names = sorted(_with_parents(paths))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as sink:
        compressed = _HashingWriter(sink)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=_FIXED_MTIME,
                           compresslevel=TREE_GZIP_LEVEL) as gz:
            uncompressed = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in names:
                    _add_from_tree(tar, root, name)
                for name in sorted(deleted):
                    parent, _, base = name.rpartition("/")
                    whiteout = f"{parent}/{_WHITEOUT}{base}" if parent else f"{_WHITEOUT}{base}"
                    tar.addfile(_tar_member(whiteout, tarfile.REGTYPE, 0o644))
    return Layer(out, compressed.digest, uncompressed.digest, compressed.size, created_by)


def tree_paths(root: Path) -> list[str]:
    """Every path below ``root``, relative, sorted, each directory before its contents."""
    found: list[str] = []
    for directory_path, directories, files in os.walk(root):
        relative = os.path.relpath(directory_path, root)
        prefix = "" if relative == "." else f"{relative}/"
        # symlinks to directories are listed among directories; os.walk does not follow them
        found.extend(prefix + name for name in (*directories, *files))
    return sorted(found)


def _with_parents(paths: Iterable[str]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        parts = path.strip("/").split("/")
        names.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return names


def _add_from_tree(tar: tarfile.TarFile, root: Path, name: str) -> None:
    full = root / name
    info = tar.gettarinfo(str(full), arcname=name)
    if info is None:  # a socket: nothing an image can hold
        return
    info.uname = info.gname = ""
    if info.isreg():
        with full.open("rb") as data:
            tar.addfile(info, data)
    else:
        tar.addfile(info)


def compile_pause(source: Path = PAUSE_SOURCE) -> bytes:
    """Compile pause.c statically and return the binary."""
    with tempfile.TemporaryDirectory(prefix="tracer-pause-") as workdir:
        binary = Path(workdir) / "pause"
        _run(["gcc", "-static", "-O2", "-Wall", "-Werror", "-o", str(binary), str(source)])
        return binary.read_bytes()


def _root_directories() -> list[LayerEntry]:
    # Mount points runc would otherwise have to create in the rootfs.
    return [directory(name) for name in ("dev", "etc", "proc", "sys")] + [directory("tmp", 0o1777)]


def pause_recipe(pause_binary: bytes) -> ImageRecipe:
    return ImageRecipe(
        name=PAUSE_IMAGE,
        entries=[*_root_directories(), regular_file("pause", pause_binary)],
        entrypoint=["/pause"],
    )


# Two classic broken entrypoints, for tests of failed starts: a script
# whose executable bit was forgotten, and an executable that is no program.
NOT_EXECUTABLE_SCRIPT = regular_file("bin/start.sh", b"#!/bin/sh\necho started\n", mode=0o644)
NOT_A_PROGRAM = regular_file("bin/not-a-program", b"this is text, not an ELF file\n", mode=0o755)


def busybox_recipe(busybox_binary: bytes) -> ImageRecipe:
    applets = [symlink(f"bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS]
    return ImageRecipe(
        name=BUSYBOX_IMAGE,
        entries=[*_root_directories(), directory("bin"), regular_file("bin/busybox", busybox_binary), *applets,
                 NOT_EXECUTABLE_SCRIPT, NOT_A_PROGRAM],
        cmd=["sh"],
    )


def _cached_archive(cache_dir: Path, stem: str, inputs: bytes, build: Callable[[], ImageRecipe]) -> Path:
    """Return the cached archive for these inputs, building it if missing.

    The file name carries a digest of the inputs, so a changed pause.c or
    busybox gets a new archive instead of a stale one.
    """
    archive = cache_dir / f"{stem}-{hashlib.sha256(inputs).hexdigest()[:16]}.oci.tar"
    if archive.exists():
        return archive
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    with partial.open("wb") as out:
        write_oci_archive(build(), out)
    partial.rename(archive)  # atomic: a crash never leaves a truncated archive
    return archive


def pause_archive(cache_dir: Path) -> Path:
    source = PAUSE_SOURCE.read_bytes()
    return _cached_archive(cache_dir, "pause", source, lambda: pause_recipe(compile_pause()))


def busybox_archive(cache_dir: Path) -> Path:
    binary = HOST_BUSYBOX.read_bytes()
    inputs = binary + "\0".join(BUSYBOX_APPLETS).encode() + repr((NOT_EXECUTABLE_SCRIPT, NOT_A_PROGRAM)).encode()
    return _cached_archive(cache_dir, "busybox", inputs, lambda: busybox_recipe(binary))


def import_archive(containerd_socket: Path, archive: Path, image_name: str) -> None:
    """Import an archive into the CRI namespace under ``image_name``."""
    repository = image_name.rpartition(":")[0]
    address = ["--address", str(containerd_socket), "--namespace", CRI_NAMESPACE]
    _run(["ctr", *address, "images", "import", "--base-name", repository, str(archive)])


def _run(argv: list[str]) -> None:
    """Run a build or import tool; its own error output explains a failure."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageError(f"{' '.join(argv)} failed with status {result.returncode}: {result.stderr.strip()}")


def install_images(containerd_socket: Path, cache_dir: Path) -> list[str]:
    """Build (or reuse) and import the test bed's images; return their names."""
    import_archive(containerd_socket, pause_archive(cache_dir), PAUSE_IMAGE)
    import_archive(containerd_socket, busybox_archive(cache_dir), BUSYBOX_IMAGE)
    return [PAUSE_IMAGE, BUSYBOX_IMAGE]
