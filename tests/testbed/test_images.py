"""The OCI archives are built in pure Python; check their layout and bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

from tracer.testbed.images import (
    BUSYBOX_APPLETS,
    ImageRecipe,
    busybox_recipe,
    directory,
    oci_archive,
    regular_file,
    symlink,
)

RECIPE = ImageRecipe(
    name="localhost/example:7",
    entries=[directory("bin"), regular_file("bin/tool", b"#!x\n"), symlink("bin/alias", "tool")],
    entrypoint=["/bin/tool"],
    cmd=["--help"],
)


def read_archive(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def blob(files: dict[str, bytes], digest: str) -> bytes:
    data = files["blobs/sha256/" + digest.removeprefix("sha256:")]
    assert hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:")
    return data


def test_archive_is_reproducible() -> None:
    assert oci_archive(RECIPE) == oci_archive(RECIPE)


def test_archive_is_an_oci_image_layout() -> None:
    files = read_archive(oci_archive(RECIPE))

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "7"}
    manifest = json.loads(blob(files, entry["digest"]))
    config = json.loads(blob(files, manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/bin/tool"]
    assert config["config"]["Cmd"] == ["--help"]
    (layer,) = manifest["layers"]
    layer_tar = gzip.decompress(blob(files, layer["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]


def test_layer_keeps_files_and_symlinks_with_fixed_metadata() -> None:
    files = read_archive(oci_archive(RECIPE))
    manifest = json.loads(blob(files, json.loads(files["index.json"])["manifests"][0]["digest"]))
    layer = gzip.decompress(blob(files, manifest["layers"][0]["digest"]))

    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("bin/tool").read() == b"#!x\n"
    assert members["bin/alias"].issym() and members["bin/alias"].linkname == "tool"
    assert {(m.mtime, m.uid, m.gid) for m in members.values()} == {(0, 0, 0)}


def test_busybox_recipe_links_every_applet() -> None:
    recipe = busybox_recipe(b"busybox")

    links = {entry.path: entry.link_target for entry in recipe.entries if entry.link_target}
    assert links == {f"bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS}
    assert recipe.name == "localhost/busybox:1"
