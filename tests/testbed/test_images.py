"""The OCI archives are built in pure Python; check their layout and bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

from tracer_testbed.images import (
    BUSYBOX_APPLETS,
    ImageRecipe,
    busybox_recipe,
    directory,
    oci_archive,
    regular_file,
    symlink,
    tree_layer,
    write_oci_archive,
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


def layer_members(path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def make_tree(root) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/motd").write_text("hello\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "usr/bin/tool-link").hardlink_to(root / "usr/bin/tool")
    (root / "usr/bin/alias").symlink_to("tool")
    (root / "dev").mkdir()
    (root / "dev/null-ish").write_text("")


def test_tree_layer_keeps_files_links_and_modes(tmp_path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    layer = tree_layer(root, tmp_path / "layer.tar.gz", skip_contents_of=["dev"])

    members = layer_members(layer.path)
    assert set(members) == {"dev", "etc", "etc/motd", "usr", "usr/bin", "usr/bin/alias", "usr/bin/tool",
                            "usr/bin/tool-link"}
    assert members["usr/bin/tool"].mode & 0o777 == 0o755
    assert members["usr/bin/alias"].issym() and members["usr/bin/alias"].linkname == "tool"
    # one of the two names is stored, the other links to it
    links = [m for m in (members["usr/bin/tool"], members["usr/bin/tool-link"]) if m.islnk()]
    assert len(links) == 1
    compressed = layer.path.read_bytes()
    assert layer.digest == "sha256:" + hashlib.sha256(compressed).hexdigest()
    assert layer.size == len(compressed)
    assert layer.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(compressed)).hexdigest()


def test_tree_layer_of_some_paths_with_parents_and_whiteouts(tmp_path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    layer = tree_layer(root, tmp_path / "top.tar.gz", paths=["usr/bin/tool"], deleted=["etc/motd", "gone"])

    assert list(layer_members(layer.path)) == ["usr", "usr/bin", "usr/bin/tool", "etc/.wh.motd", ".wh.gone"]


def test_image_of_written_layers_stacks_them_in_order(tmp_path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    base = tree_layer(root, tmp_path / "base.tar.gz", created_by="base")
    top = tree_layer(root, tmp_path / "top.tar.gz", paths=["etc/motd"], created_by="top")
    recipe = ImageRecipe(name="localhost/stacked:2", entries=[], entrypoint=["/usr/bin/tool"],
                         env=("PATH=/usr/bin", "X=1"), working_dir="/etc", layers=(base, top))

    files = read_archive(oci_archive(recipe))
    manifest = json.loads(blob(files, json.loads(files["index.json"])["manifests"][0]["digest"]))
    assert [layer["digest"] for layer in manifest["layers"]] == [base.digest, top.digest]
    assert blob(files, base.digest) == base.path.read_bytes()
    config = json.loads(blob(files, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [base.diff_id, top.diff_id]
    assert [h["created_by"] for h in config["history"]] == ["base", "top"]
    assert config["config"]["Env"] == ["PATH=/usr/bin", "X=1"]
    assert config["config"]["WorkingDir"] == "/etc"

    # written to a file, the same bytes
    with (tmp_path / "image.tar").open("wb") as out:
        write_oci_archive(recipe, out)
    assert (tmp_path / "image.tar").read_bytes() == oci_archive(recipe)
