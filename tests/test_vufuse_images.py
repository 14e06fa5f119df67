"""vufuse end to end: images of every supported type, built unprivileged,
mounted with `vumount -t vufuseTYPE IMAGE DIR` inside a real umvu session
(the unmodified FUSE program runs as a helper process of the view), listed
and read back with coreutils; read-only behaviour; the FOSDEM 2020 example
(seed 004); exec and mmap of files inside an image.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from _vufs_helpers import vu  # noqa: F401  (fixture)
from test_vufuse_support import (
    EXT_KINDS, LIST_AND_SUM, NOBODY, SYMLINKS, VIEW_ENV, build_image,
    chown_tree, host, make_source_tree, manifest, nobody_tmp, parse_listing,
    sections, sha256_file, short, tool, values)

ALL_KINDS = ("ext2", "ext3", "ext4", "fat", "iso9660", "squashfs", "zip", "exfat")
IMAGE_NAME = {"zip": "img.zip", "iso9660": "img.iso"}


@pytest.fixture(scope="module")
def images():
    """One source tree and one image of each type, built by uid 65534."""
    base = nobody_tmp("vufuse-images-")
    src = make_source_tree(base)
    built = {"src": src, "base": base}
    errors = {}
    for kind in ALL_KINDS:
        img = base / IMAGE_NAME.get(kind, f"{kind}.img")
        try:
            built[kind] = build_image(kind, src, img)
        except (AssertionError, pytest.skip.Exception) as exc:
            errors[kind] = str(exc)
    built["errors"] = errors
    yield built
    shutil.rmtree(base, ignore_errors=True)


def expected_manifest(kind: str, src) -> dict:
    """What `kind` can hold of the source tree."""
    want = manifest(src)
    if kind == "exfat":
        return {}               # no unprivileged way to fill it: an empty one
    if kind == "fat":
        # no symlinks (mcopy copies the target's data), names compared
        # without case
        for name, target in SYMLINKS.items():
            want[name] = want[target]
        return {k.lower(): v for k, v in want.items()}
    return want


def _drop_fs_own(kind: str, got: dict) -> dict:
    if kind in EXT_KINDS:
        got = {k: v for k, v in got.items()
               if k != "lost+found" and not k.startswith("lost+found/")}
    if kind == "fat":
        got = {k.lower(): v for k, v in got.items()}
    return got


def _mnt(base, name="mnt"):
    d = base / name
    d.mkdir(exist_ok=True)
    os.chown(d, NOBODY, NOBODY)
    return d


# ---------------------------------------------------------------------------
# 1. every type: list, read, sha256 of every file

def _list_read_compare(vu, images, kind, user=None):
    if kind in images["errors"]:
        pytest.fail(f"cannot build the {kind} image: {images['errors'][kind]}")
    mnt = nobody_tmp(f"vufuse-mnt-{kind}-")
    try:
        res = vu(f"""
            vu_insmod vufuse || exit 90
            MNT={mnt}
            vumount -t vufuse{kind} {images[kind]} $MNT; echo "mount=$?"
            echo "== mounts"; grep " $MNT " /proc/mounts; echo "== -"
            {LIST_AND_SUM}
            vuumount $MNT; echo "umount=$?"
            """, user=user, env=VIEW_ENV)
    finally:
        shutil.rmtree(mnt, ignore_errors=True)
    v = values(res.out)
    assert v.get("mount") == "0", f"vumount -t vufuse{kind} failed: {short(res)}"
    mounts = [line.split() for line in sections(res.out)["mounts"]]
    assert [m[1:3] for m in mounts] == [[str(mnt), f"vufuse{kind}"]], short(res)
    got = _drop_fs_own(kind, parse_listing(res.out))
    want = expected_manifest(kind, images["src"])
    # the same names and types
    assert sorted(got) == sorted(want), short(res)
    bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not bad, f"vufuse{kind}: entries differ (got, want): {bad}\n{short(res)}"
    assert v.get("umount") == "0", short(res)
    assert res.rc == 0, short(res)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_mount_list_read_compare(vu, images, kind):
    _list_read_compare(vu, images, kind)


@pytest.mark.parametrize("kind", EXT_KINDS)
def test_ext_list_read_compare_as_nobody(vu, images, kind):
    """9. the same, the whole session run by uid 65534."""
    _list_read_compare(vu, images, kind, user=NOBODY)


# ---------------------------------------------------------------------------
# 3. without rw+ the file system is read-only

WRITES = {
    "redirect": 'echo x > "$M/new.txt"',
    "append": 'echo x >> "$M/hello.txt"',
    "touch": 'touch "$M/touched"',
    "mkdir": 'mkdir "$M/newdir"',
    "rm": 'rm "$M/hello.txt"',
    "rmdir": 'rmdir "$M/sub/emptydir"',
    "mv": 'mv "$M/hello.txt" "$M/moved.txt"',
    "chmod": 'chmod 600 "$M/hello.txt"',
    "ln_s": 'ln -s hello.txt "$M/newlink"',
    "ln": 'ln "$M/hello.txt" "$M/hardlink"',
    "truncate": 'truncate -s 0 "$M/hello.txt"',
}


@pytest.mark.parametrize("kind", ["ext4", "ext2"])
def test_without_rw_plus_writes_fail_erofs(vu, images, kind):
    base = nobody_tmp("vufuse-ro-")
    try:
        img = base / "ro.img"
        shutil.copy(images[kind], img)
        os.chown(img, NOBODY, NOBODY)
        before = sha256_file(img)
        mnt = _mnt(base)
        body = "\n".join(f'echo "== {name}"; {cmd}; echo "rc=$?"'
                         for name, cmd in WRITES.items())
        res = vu(f"""
            vu_insmod vufuse || exit 90
            M={mnt}
            vumount -t vufuse{kind} {img} $M; echo "mount=$?"
            {body}
            echo "== check"
            cat $M/hello.txt; ls $M/sub
            vuumount $M; echo "umount=$?"
            """, env=VIEW_ENV)
        assert values(res.out).get("mount") == "0", res
        secs = sections(res.out)
        for name in WRITES:
            lines = secs.get(name, [])
            assert lines and lines[-1] != "rc=0", f"{name} succeeded read-only: {res!r}"
        # every failure says why, in the words of the kernel
        n_erofs = res.err.count("Read-only file system")
        assert n_erofs >= len(WRITES), (
            f"only {n_erofs} 'Read-only file system' messages for "
            f"{len(WRITES)} writes: {res!r}")
        assert secs["check"][:1] == ["hello world"], res
        assert "emptydir" in secs["check"], res
        assert sha256_file(img) == before, "a read-only mount changed the image"
        assert values(res.out).get("umount") == "0", short(res)
        fsck = host([tool("e2fsck"), "-fn", img])
        assert fsck.returncode == 0, fsck.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_readonly_mount_is_listed_ro(vu, images):
    """A mount that answers EROFS (no rw+) says "ro" in /proc/mounts,
    as `mount -o ro` would; with rw+ it says "rw"."""
    mnt = nobody_tmp("vufuse-mnt-ro-")
    try:
        res = vu(f"""
            vu_insmod vufuse || exit 90
            vumount -t vufuseext4 {images['ext4']} {mnt}; echo "mount=$?"
            echo "== mounts"; grep " {mnt} " /proc/mounts; echo "== -"
            vuumount {mnt}
            """, env=VIEW_ENV)
    finally:
        shutil.rmtree(mnt, ignore_errors=True)
    assert values(res.out).get("mount") == "0", short(res)
    fields = sections(res.out)["mounts"][0].split()
    assert "ro" in fields[3].split(","), (
        f"a read-only vufuse mount is listed as {fields[3]!r}: {fields}")


# ---------------------------------------------------------------------------
# 4. the FOSDEM 2020 slide (seed 004)

SEED_DIRS = ["bin", "boot", "dev", "etc", "lib", "mnt", "proc", "sbin", "tmp", "usr"]


@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_seed_004_fosdem_example(vu, user):
    base = nobody_tmp("vufuse-seed-")
    try:
        tree = base / "tree"
        for d in SEED_DIRS:
            (tree / d).mkdir(parents=True)
        (tree / "etc" / "hostname").write_text("linux\n")
        chown_tree(tree)
        img = build_image("ext2", tree, base / "linux.img", "16M")
        mnt = _mnt(base)
        (mnt / "host-marker").write_text("the host directory\n")
        os.chown(mnt / "host-marker", NOBODY, NOBODY)
        res = vu(f"""
            T={base}
            vu_insmod vufuse; echo "insmod=$?"
            vumount -t vufuseext2 -o rw+ $T/linux.img $T/mnt; echo "mount=$?"
            echo "== ls"
            ls $T/mnt
            echo "== hostname"
            cat $T/mnt/etc/hostname
            echo "== umount"
            vuumount $T/mnt; echo "umount=$?"
            echo "== after"
            ls $T/mnt; echo "after=$?"
            """, user=user, env=VIEW_ENV)
        v = values(res.out)
        assert v.get("insmod") == "0" and v.get("mount") == "0", res
        secs = sections(res.out)
        assert secs["ls"] == sorted(SEED_DIRS + ["lost+found"]), res
        assert secs["hostname"] == ["linux"], res
        assert v.get("umount") == "0", res
        after = secs["after"]
        # either ls fails, or it shows the host directory again
        assert v.get("after") != "0" or after[:-1] == ["host-marker"], res
        assert res.rc == 0, res
        fsck = host([tool("e2fsck"), "-fn", img])
        assert fsck.returncode == 0, fsck.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# 8. exec and mmap of files in an image

@pytest.fixture(scope="module")
def exec_image():
    base = nobody_tmp("vufuse-exec-")
    src = base / "src"
    src.mkdir()
    shutil.copy2(shutil.which("ls"), src / "ls")
    (src / "script.sh").write_text("#!/bin/sh\necho script-ran \"$@\"\n")
    (src / "script.sh").chmod(0o755)
    (src / "data.bin").write_bytes(os.urandom(300000))
    static_reason = None
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        static_reason = "no C compiler"
    else:
        (base / "s.c").write_text("int main(void){return 42;}\n")
        cc = subprocess.run([gcc, "-static", "-O2", "-o", str(src / "static42"),
                             str(base / "s.c")], capture_output=True, text=True)
        if cc.returncode != 0:
            static_reason = f"gcc -static failed (no static libc?): {cc.stderr[-300:]}"
    chown_tree(src)
    img = build_image("ext4", src, base / "exec.img")
    yield {"base": base, "src": src, "img": img, "static_reason": static_reason}
    shutil.rmtree(base, ignore_errors=True)


def _run_in_image(vu, exec_image, body, user=None):
    mnt = _mnt(exec_image["base"], f"mnt-{os.getpid()}-{user}")
    return vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 {exec_image['img']} $M; echo "mount=$?"
        {body}
        vuumount $M; echo "umount=$?"
        """, user=user, env=VIEW_ENV)


def test_exec_dynamic_binary_from_image(vu, exec_image):
    res = _run_in_image(vu, exec_image, """
        echo "== ls"
        $M/ls -1 $M; echo "ls=$?"
        echo "== script"
        $M/script.sh a b; echo "script=$?"
        """)
    v = values(res.out)
    assert v.get("mount") == "0", res
    secs = sections(res.out)
    assert v.get("ls") == "0", res
    names = [line for line in secs["ls"] if not line.startswith("ls=")]
    assert names == sorted(["data.bin", "lost+found", "ls", "script.sh"] +
                           (["static42"] if exec_image["static_reason"] is None else [])), res
    assert "script-ran a b" in secs["script"], res
    assert v.get("script") == "0", res


def test_exec_static_binary_from_image(vu, exec_image):
    # gcc and libc6-dev (static libc) are installed by `make deps`
    assert exec_image["static_reason"] is None, exec_image["static_reason"]
    res = _run_in_image(vu, exec_image, """
        $M/static42; echo "static=$?"
        """)
    v = values(res.out)
    assert v.get("mount") == "0", res
    assert v.get("static") == "42", res


def test_mmap_of_file_in_image(vu, exec_image):
    data = (exec_image["src"] / "data.bin").read_bytes()
    res = _run_in_image(vu, exec_image, r"""
        python3 - "$M/data.bin" <<'EOF'
import hashlib, mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    print("len=%d" % len(m))
    print("sha=" + hashlib.sha256(m[:]).hexdigest())
    print("slice=" + m[123456:123472].hex())
    m.close()
# a mapping at a page offset
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 8192, prot=mmap.PROT_READ, offset=65536)
    print("off=" + m[:16].hex())
EOF
        echo "py=$?"
        """)
    v = values(res.out)
    assert v.get("mount") == "0", res
    assert v.get("py") == "0", res
    assert v.get("len") == str(len(data)), res
    assert v.get("sha") == __import__("hashlib").sha256(data).hexdigest(), res
    assert v.get("slice") == data[123456:123472].hex(), res
    assert v.get("off") == data[65536:65552].hex(), res


def test_fat_read_at_end_of_file_is_empty(vu, images):
    """read(2) at or past the end of a file returns 0 bytes. The kernel
    never sends FUSE_READ past i_size for such files, and fusefat answers
    one with an error (natively mounted fusefat reads these files fine)."""
    mnt = nobody_tmp("vufuse-mnt-fateof-")
    try:
        res = vu(f"""
            vu_insmod vufuse || exit 90
            vumount -t vufusefat {images['fat']} {mnt}; echo "mount=$?"
            python3 - {mnt}/hello.txt <<'PYEOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print("first=%r" % os.pread(fd, 100, 0))
for off in (12, 100):
    try:
        print("at%d=%r" % (off, os.pread(fd, 100, off)))
    except OSError as e:
        print("at%d=%s" % (off, e.strerror))
PYEOF
            cat {mnt}/hello.txt > /dev/null; echo "cat=$?"
            vuumount {mnt}
            """, env=VIEW_ENV)
    finally:
        shutil.rmtree(mnt, ignore_errors=True)
    v = values(res.out)
    assert v.get("mount") == "0", short(res)
    assert v.get("first") == repr(b"hello world\n"), short(res)
    assert v.get("at12") == "b''", f"read at end of file: {v.get('at12')}"
    assert v.get("at100") == "b''", f"read past end of file: {v.get('at100')}"
    assert v.get("cat") == "0", short(res)
