"""Stacked services (issue 13, "Stacking"): any vufs mode over any vufs
mode, or over a vufuse mount, two and three deep, passes the consistency
checks of tests/test_vufs_consistency.py (its OPS, run on its fixture) with
the same output as on a plain host directory, and shows afterwards the
same tree, through the view, as the host shows after the same operations.

A stack is a base (a host directory, an ext2 image served by fuse2fs with
rw+, a squashfs image served by squashfuse, read-only) and vufs modes
mounted on it, bottom first: bind shows the current top at a new mount
point; merge, cow and mincow are mounted on the current top with a fresh
(empty) host directory as SOURCE. One umvu session per stack runs every
operation, each on its own copy of the fixture.

Over a read-only image, a stack with no cow or mincow above it cannot be
written: there the reading operations must match, and every change must
fail with EROFS.

The matrix (see CELLS): every mode over every mode over a host directory
(two deep, 16), every mode over ext2 and over squashfs (two deep, 8), and
three deep a latin square of modes over a host directory (4) and eight
mixed stacks over the images, each mode at each level at least once.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import NOBODY, make_tmp, manifest, native  # noqa: E402
from test_vufs_consistency import OPS, make_fixture  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir

MODES = ("bind", "merge", "cow", "mincow")
READ_OPS = ("stat", "read", "readdir", "readlink")
#: what the view shows of $D once an operation is done (no times: a copy-up
#: keeps them, but the host's own directory times move with each change)
STATE = ("cd \"$D\" && find . -printf '%p %y %m %l\\n' | LC_ALL=C sort && "
         "find . -type f | LC_ALL=C sort | xargs -r md5sum")
#: on a read-only stack every change fails, and says why
EROFS = """
    echo x > $D/file; echo x > $D/new; mkdir $D/newdir; rm $D/file; rmdir $D/empty
    mv $D/file $D/f2; ln $D/file $D/hard; ln -s file $D/sl; chmod 600 $D/file
    touch $D/sub/a; true
    """

# ---- the matrix -------------------------------------------------------------------
CELLS = (
    [("host", (lo, hi)) for lo in MODES for hi in MODES]
    + [(base, (m,)) for base in ("ext2", "squashfs") for m in MODES]
    + [("host", ("bind", "merge", "cow")), ("host", ("merge", "cow", "mincow")),
       ("host", ("cow", "mincow", "bind")), ("host", ("mincow", "bind", "merge"))]
    + [("ext2", ("cow", "bind")), ("ext2", ("bind", "cow")),
       ("ext2", ("merge", "mincow")), ("ext2", ("mincow", "merge")),
       ("squashfs", ("cow", "cow")), ("squashfs", ("bind", "mincow")),
       ("squashfs", ("mincow", "bind")), ("squashfs", ("merge", "cow"))]
)


def writable(base: str, modes: tuple) -> bool:
    """Can the stack be written? Not a read-only image with no store above."""
    return base != "squashfs" or any(m in ("cow", "mincow") for m in modes)


def cell_id(cell) -> str:
    base, modes = cell
    return "-over-".join(reversed(modes)) + "-over-" + base


# ---- building the pieces ---------------------------------------------------------------
def make_tree(top: str, ops) -> None:
    """top/OP/t: the consistency fixture, once per operation."""
    for op in ops:
        os.mkdir(os.path.join(top, op), 0o755)
        make_fixture(os.path.join(top, op))


def op_scripts(top: str, ops) -> None:
    os.makedirs(top)
    for op in ops:
        with open(os.path.join(top, op), "w") as f:
            f.write(OPS.get(op) or EROFS)


def run_ops(ops, root: str, scripts: str) -> str:
    """The bash lines running each operation on root/OP/t, then STATE."""
    lines = []
    for op in ops:
        lines += [f"echo '== {op}'",
                  f'P= D={root}/{op}/t bash -c "$(cat {scripts}/{op})" 2>&1; echo "rc=$?"',
                  f"echo '== {op} state'", f"D={root}/{op}/t; ({STATE})"]
    return "\n".join(lines) + "\n"


def split(out: str, root: str, ops) -> dict:
    """{section: text}, each operation's own fixture path shown as D."""
    result, name = {}, None
    for line in out.splitlines():
        if line.startswith("== "):
            name = line[3:]
            result[name] = []
        elif name is not None:
            result[name].append(line)
    texts = {}
    for name, body in result.items():
        op = name.split()[0]
        text = "\n".join(body).replace(f"{root}/{op}/t", "D")
        texts[name] = mask_dir_sizes(text)
    return texts


def mask_dir_sizes(text: str) -> str:
    """A directory's size is its file system's (squashfs counts bytes of
    entries): not a property of the stack."""
    text = re.sub(r"^(d\S+\s+\d+\s+\S+\s+\S+\s+)\d+", r"\1N", text, flags=re.M)
    text = re.sub(r"(?<=\S)  +", " ", text)          # ls's columns, aligned
    return re.sub(r"\|directory\|([0-9a-f]+)\|\d+\|", r"|directory|\1|N|", text)


@pytest.fixture(scope="module")
def reference():
    """Every operation (and the EROFS one) run natively: {section: text}."""
    top = make_tmp("stack-ref-")
    try:
        ops = list(OPS) + ["erofs"]
        make_tree(top, ops)
        op_scripts(os.path.join(top, ".ops"), ops)
        res = native(run_ops(list(OPS), top, os.path.join(top, ".ops")), cwd=top)
        assert res.rc == 0, res
        return split(res.out, top, list(OPS))
    finally:
        shutil.rmtree(top, ignore_errors=True)


def build_image(kind: str, tree: str, image: str) -> None:
    if kind == "ext2":
        cmd = ["mkfs.ext2", "-q", "-b", "4096", "-d", tree, image, "8M"]
    else:
        cmd = ["mksquashfs", tree, image, "-quiet", "-noappend", "-no-progress"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def mount_stack(base: str, modes: tuple, t: str) -> tuple[str, str]:
    """The bash lines mounting the stack (base at t/tree, or its image at
    t/m0), and the path its top shows the tree at."""
    lines = ["vu_insmod vufs vufuse || echo MOUNT-FAILED"]
    cur = f"{t}/tree"
    if base != "host":
        opts = " -o rw+" if base == "ext2" else ""
        lines.append(f"vumount -t vufuse{base}{opts} {t}/image {t}/m0 || echo MOUNT-FAILED")
        cur = f"{t}/m0"
    for i, mode in enumerate(modes, 1):
        if mode == "bind":
            lines.append(f"vumount -t vufs {cur} {t}/m{i} || echo MOUNT-FAILED")
            cur = f"{t}/m{i}"
        else:
            os.mkdir(f"{t}/s{i}")
            lines.append(f"vumount -t vufs -o {mode} {t}/s{i} {cur} || echo MOUNT-FAILED")
    return "\n".join(lines) + "\n", cur


def fingerprint(base: str, t: str):
    """What the base holds (an image's tree as debugfs or unsquashfs dumps
    it: fuse2fs writes its superblock's mount count and times)."""
    if base == "host":
        return manifest(f"{t}/tree", times=False)
    out = f"{t}/dump"
    shutil.rmtree(out, ignore_errors=True)
    if base == "ext2":
        os.mkdir(out)
        cmd = ["debugfs", "-R", f"rdump / {out}", f"{t}/image"]
    else:
        cmd = ["unsquashfs", "-n", "-d", out, f"{t}/image"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return manifest(out, times=False)


# ---- the matrix test -------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
def test_stack_consistent(vu, reference, tdir, cell):
    base, modes = cell
    can_write = writable(base, modes)
    ops = list(OPS) if can_write else list(READ_OPS) + ["erofs"]
    tree = os.path.join(tdir, "tree")
    os.mkdir(tree, 0o755)
    make_tree(tree, ops)
    op_scripts(os.path.join(tdir, "ops"), ops)
    if base != "host":
        build_image(base, tree, os.path.join(tdir, "image"))
    mounts, top = mount_stack(base, modes, tdir)
    before = fingerprint(base, tdir)
    res = vu(mounts + run_ops(ops, top, os.path.join(tdir, "ops")), timeout=60)
    assert "MOUNT-FAILED" not in res.out, res
    assert res.rc == 0, res
    got = split(res.out, top, ops)
    for op in ops:
        if op == "erofs":
            lines = got["erofs"].splitlines()
            assert lines[-1] == "rc=0", res
            errors = lines[:-1]
            assert len(errors) == 10 and all(
                "Read-only file system" in line for line in errors), res
            assert got["erofs state"] == reference["readlink state"], res
            continue
        for name in (op, f"{op} state"):
            assert got[name] == reference[name], _diff(name, reference[name],
                                                        got[name], res)
    if modes[0] == "cow" or not can_write:
        # the lowest vufs layer a cow, or nothing writable: the base as it was
        assert fingerprint(base, tdir) == before, res


def _diff(name: str, want: str, got: str, res) -> str:
    lines = difflib.unified_diff(want.splitlines(), got.splitlines(),
                                 "host", "stack", lineterm="")
    return f"{name}: the stack differs\n" + "\n".join(lines) + \
        f"\n--- script ---\n{res.script}--- stderr ---\n{res.err}"


# ---- the defects of issue 13, as reported ------------------------------------------------
def test_bind_over_cow_rename_and_link(vu, tdir):
    """mv and ln through a bind of a cow mount (git, editors that save by
    renaming): they reached the cow without their second path (EIO)."""
    t = tdir
    os.makedirs(f"{t}/st")
    os.makedirs(f"{t}/t")
    with open(f"{t}/t/a", "w") as f:
        f.write("a\n")
    res = vu(f"""\
        vu_insmod vufs; vumount -t vufs -o cow {t}/st {t}/t; vumount -t vufs {t}/t {t}/b
        mv {t}/b/a {t}/b/a2 && ln {t}/b/a2 {t}/b/a3 && ls {t}/b {t}/t && cat {t}/b/a3
        """)
    assert res.out == f"{t}/b:\na2\na3\n\n{t}/t:\na2\na3\na\n", res
    assert os.listdir(f"{t}/t") == ["a"]
    assert sorted(os.listdir(f"{t}/st")) == [".-", "a2", "a3"]


@pytest.mark.parametrize("mode", ["cow", "mincow"])
def test_cow_over_cow_lists_every_layer(vu, tdir, mode):
    t = tdir
    for d in ("st", "st2", "t"):
        os.makedirs(f"{t}/{d}")
    with open(f"{t}/t/a", "w") as f:
        f.write("a\n")
    for d in ("st", "st2"):
        os.chown(f"{t}/{d}", NOBODY, NOBODY)
    os.chmod(f"{t}/t", 0o555)       # mincow: the host directory is not writable
    try:
        res = vu(f"""\
            vu_insmod vufs; vumount -t vufs -o cow {t}/st {t}/t; echo b > {t}/t/b
            vumount -t vufs -o {mode} {t}/st2 {t}/t; echo c > {t}/t/c; ls {t}/t
            rm {t}/t/b; ls {t}/t
            """, user=NOBODY)
    finally:
        os.chmod(f"{t}/t", 0o755)
    assert res.out == "a\nb\nc\na\nc\n", res


def test_cow_and_bind_over_a_served_image(vu, tdir):
    """A writable cow over a squashfs image, and a bind of one file out of
    it: vufs's lower view had no answer for a served file (EOPNOTSUPP)."""
    t = tdir
    os.makedirs(f"{t}/tree/sub")
    os.makedirs(f"{t}/st")
    with open(f"{t}/tree/f", "w") as f:
        f.write("hi\n")
    build_image("squashfs", f"{t}/tree", f"{t}/image")
    res = vu(f"""\
        vu_insmod vufs vufuse; vumount -t vufusesquashfs {t}/image {t}/mnt
        vumount -t vufs {t}/mnt/f {t}/one && cat {t}/one
        echo no > {t}/one; echo "rc=$?"
        vumount -t vufs -o cow {t}/st {t}/mnt && echo x >> {t}/mnt/f && cat {t}/mnt/f
        ls {t}/mnt
        """)
    assert res.out == "hi\nrc=1\nhi\nx\nf\nsub\n", res
    assert "Read-only file system" in res.err, res
    with open(f"{t}/st/f") as f:
        assert f.read() == "hi\nx\n"


def test_image_as_source(vu, tdir):
    """An image's directory as SOURCE: merge lays it over a host directory
    (read-only where it has names); a cow store inside it is refused."""
    t = tdir
    os.makedirs(f"{t}/tree/sub")
    os.makedirs(f"{t}/t")
    with open(f"{t}/tree/sub/f", "w") as f:
        f.write("img\n")
    with open(f"{t}/t/own", "w") as f:
        f.write("own\n")
    build_image("squashfs", f"{t}/tree", f"{t}/image")
    res = vu(f"""\
        vu_insmod vufs vufuse; vumount -t vufusesquashfs {t}/image {t}/mnt
        vumount -t vufs -o cow {t}/mnt/sub {t}/t; echo "cow=$?"
        vumount -t vufs -o merge {t}/mnt/sub {t}/t; echo "merge=$?"
        ls {t}/t; cat {t}/t/f; echo x > {t}/t/f; echo new > {t}/t/new; rm {t}/t/own
        ls {t}/t
        """)
    assert res.out == "cow=1\nmerge=0\nf\nown\nimg\nf\nnew\n", res
    assert "Operation not supported" in res.err, res
    assert "Read-only file system" in res.err, res
    assert sorted(os.listdir(f"{t}/t")) == ["new"]
