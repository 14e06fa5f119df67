"""The benchmark workloads.

Each workload is built by a function taking the run's Context (a scratch
directory, the --quick flag) and returning a Workload: a shell command run
with `sh -c` in `cwd`, plus an optional `check` command, run once untimed
(as the warm-up) under every variant, whose output must match the
reference's (native's). The timed command's own stdout must match too.

Timing: the command is timed from inside the view by the timer (timer.c),
after the variant's set-up, so the numbers are the workload's own cost;
the whole command (start-up of the hypervisor included) is recorded too.
The start-up workload is the exception: its number is the whole command.

`group` picks the variants (variants.py) and the table it is reported in:
"main" (the ratio tables and geometric means), "seqread" (throughput of a
sequential read through mounts over the file's directory), "startup",
"vufuse" (an ext4 image: umvu's vufuse, the kernel's FUSE and the kernel's
ext4; the reference is the kernel's ext4). `params` are substituted into
the variants' set-up (variants.DEFAULT_PARAMS: `data_dir`, `cow_dir`,
`image`, `mnt`).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Context:
    tmp: Path               # scratch directory, removed at the end
    quick: bool = False
    cache: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Workload:
    name: str
    title: str              # short description for the table and chart
    cmd: str
    cwd: Optional[str] = None
    check: Optional[str] = None
    kinds: Optional[frozenset] = None   # variant kinds it runs under; None: all
    group: str = "main"
    params: dict = dataclasses.field(default_factory=dict)
    timing: str = "inner"   # "inner": timed in the view; "wall": whole command
    #: variants whose time the ratios are to, the first one that ran
    reference: tuple = ("native",)
    bytes: Optional[int] = None         # data read: throughput is reported


def _sh(cmd: str, cwd) -> None:
    subprocess.run(["/bin/sh", "-ec", cmd], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)


def _lib_dir(ctx: Context) -> str:
    if not ctx.quick:
        return "/usr/lib"
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    small = f"/usr/lib/{multiarch}"
    return small if multiarch and os.path.isdir(small) else "/usr/lib"


def find_so(ctx: Context) -> Workload:
    d = _lib_dir(ctx)
    return Workload(
        "find", f"find {d} -name '*.so'",
        cmd=f"find {d} -name '*.so' >/dev/null",
        check=f"find {d} -name '*.so' | LC_ALL=C sort | md5sum")


def tar_include(ctx: Context) -> Workload:
    d = "usr/include/linux" if ctx.quick else "usr/include"
    # -C / instead of /usr/include: same work without tar's "Removing
    # leading /" notice. Piped to wc: GNU tar does not read the files
    # when its output is /dev/null.
    return Workload("tar", f"tar -cf - /{d} | wc -c",
                    cmd=f"tar -C / -cf - {d} | wc -c")


def python_import(ctx: Context) -> Workload:
    mods = "email, json, http.client"
    return Workload(
        "python", f"python3 -c 'import {mods}'",
        cmd=f"python3 -c 'import {mods}'",
        check=f"python3 -c 'import {mods}; print(http.client.HTTPConnection"
              f".default_port, json.dumps([1]))'")


def exec_loop(ctx: Context) -> Workload:
    n = 50 if ctx.quick else 200
    return Workload(
        "exec", f"sh loop: {n} x /bin/true",
        cmd=f"i=0; while [ $i -lt {n} ]; do /bin/true || exit 1; "
            f"i=$((i+1)); done; echo $i")


def stat_read(ctx: Context) -> Workload:
    n = 10000 if ctx.quick else 100000
    d = ctx.tmp / "statread"
    d.mkdir()
    subprocess.run(["gcc", "-O2", "-o", str(d / "statread"),
                    str(HERE / "statread.c")], check=True)
    (d / "small.txt").write_bytes(b"x" * 99 + b"\n")
    return Workload("statread", f"C: {n} x stat+open+read+close",
                    cmd=f"./statread small.txt {n}", cwd=str(d))


CC_UNIT = r"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item%(i)d { int key; char name[32]; double weight; };

static int cmp%(i)d(const void *a, const void *b)
{
    const struct item%(i)d *x = a, *y = b;
    return (x->key > y->key) - (x->key < y->key);
}

double unit%(i)d(int n)
{
    struct item%(i)d *v = calloc(n, sizeof *v);
    double sum = 0;
    if (!v)
        return -1;
    for (int k = 0; k < n; k++) {
        v[k].key = (k * %(mul)d) %% 97;
        snprintf(v[k].name, sizeof v[k].name, "item-%%d-%%d", %(i)d, k);
        v[k].weight = k / 3.0;
    }
    qsort(v, n, sizeof *v, cmp%(i)d);
    for (int k = 0; k < n; k++)
        sum += v[k].weight * strlen(v[k].name);
    free(v);
    return sum;
}
"""


def gcc_units(ctx: Context) -> Workload:
    n = 3 if ctx.quick else 10
    d = ctx.tmp / "cc"
    d.mkdir()
    for i in range(n):
        (d / f"unit{i:02d}.c").write_text(CC_UNIT % {"i": i, "mul": 31 + 2 * i})
    loop = 'for f in unit*.c; do gcc -O0 -c "$f" || exit 1; done'
    return Workload(
        "gcc", f"gcc -O0 -c, {n} small files",
        cmd=loop, cwd=str(d),
        check=f"rm -f *.o; {loop}; cat unit*.o | md5sum")


def git_status(ctx: Context) -> Workload:
    n = 200 if ctx.quick else 2000
    d = ctx.tmp / "repo"
    per_dir = 50
    for i in range(n):
        sub = d / f"dir{i // per_dir:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"file{i:04d}.txt").write_text(f"file {i}\n" + "line\n" * (i % 7))
    # files older than the index: no "racily clean" entries to re-hash
    old = time.time() - 60
    for p in d.rglob("*.txt"):
        os.utime(p, (old, old))
    _sh("git init -q -b main . && git add -A && "
        "git -c user.name=bench -c user.email=bench@localhost "
        "commit -q -m init && git status >/dev/null", d)
    return Workload("git", f"git status, {n} files", cmd="git status",
                    cwd=str(d))


def startup(ctx: Context) -> Workload:
    # the whole command: `umvu true` is the hypervisor's start-up and exit
    # (with the variant's set-up: module loading, mounts)
    return Workload("startup", "`true`, whole command", cmd="true",
                    kinds=frozenset({"native", "umvu", "proot"}),
                    group="startup", timing="wall")


MiB = 1 << 20


def _write_file(path: Path, size: int) -> None:
    """`size` bytes of incompressible data, written (not sparse)."""
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(block[i % 251:] + block[:i % 251])
        f.write(block[:size % MiB])


def seq_read(ctx: Context) -> Workload:
    # 1 GiB: the exec of dd and its open (~1-2 ms more in a traced view)
    # must not pass for read throughput
    size = (32 if ctx.quick else 1024) * MiB
    d = ctx.tmp / "seq"
    d.mkdir()
    _write_file(d / "big", size)
    # dd, not cat: GNU cat may hand the copy to the kernel (copy_file_range)
    return Workload(
        "seqread", f"dd {size // MiB} MiB file, bs=1M, to /dev/null",
        cmd=f"dd if={d}/big of=/dev/null bs=1M status=none && echo ok",
        check=f"md5sum < {d}/big", group="seqread", bytes=size,
        params={"data_dir": str(d), "cow_dir": str(ctx.tmp / "cow-seq")})


def _vufuse_image(ctx: Context) -> dict:
    """An ext4 image with a big file and a tree of small files, built once
    with mke2fs -d (no root, no mount)."""
    if "vufuse" in ctx.cache:
        return ctx.cache["vufuse"]
    big = (8 if ctx.quick else 64) * MiB
    nfiles = 200 if ctx.quick else 2000
    base = ctx.tmp / "vufuse"
    src = base / "src"
    tree = src / "tree"
    tree.mkdir(parents=True)
    _write_file(src / "big", big)
    per_dir = 50
    for i in range(nfiles):
        sub = tree / f"d{i // per_dir:02d}"
        sub.mkdir(exist_ok=True)
        # 100 bytes to ~6 KiB
        (sub / f"f{i:04d}").write_bytes(
            (f"file {i} " * (10 + (i * 37) % 600)).encode()[:100 + (i * 97) % 6000])
    image = base / "ext4.img"
    size = f"{big // MiB + 96}M"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(src),
                    str(image), size], check=True, stdout=subprocess.DEVNULL)
    mnt = base / "mnt"
    mnt.mkdir()
    info = {"image": str(image), "mnt": str(mnt), "big": big,
            "nfiles": nfiles}
    ctx.cache["vufuse"] = info
    return info


VUFUSE_REFERENCE = ("kernel-ext4", "kernel-fuse")


def vufuse_read(ctx: Context) -> Workload:
    img = _vufuse_image(ctx)
    m = img["mnt"]
    return Workload(
        "vufuse-read", f"ext4 image: dd {img['big'] // MiB} MiB file",
        cmd=f"dd if={m}/big of=/dev/null bs=1M status=none && echo ok",
        check=f"md5sum < {m}/big", group="vufuse", bytes=img["big"],
        params={"image": img["image"], "mnt": m},
        reference=VUFUSE_REFERENCE)


def vufuse_tar(ctx: Context) -> Workload:
    img = _vufuse_image(ctx)
    m = img["mnt"]
    return Workload(
        "vufuse-tar", f"ext4 image: tar {img['nfiles']} files | wc -c",
        cmd=f"tar -C {m} -cf - tree | wc -c",
        check=f"tar -C {m} -cf - --sort=name --mtime=@0 --owner=0 "
              f"--group=0 --numeric-owner tree | md5sum",
        group="vufuse", params={"image": img["image"], "mnt": m},
        reference=VUFUSE_REFERENCE)


def squashfs_ls(ctx: Context) -> Workload:
    """`ls -laR` of a squashfs image of 10k entries (500 directories of 19
    files): umvu's vufuse with squashfuse, against squashfuse through the
    kernel's FUSE and the kernel's own squashfs."""
    n = 2000 if ctx.quick else 10000
    base = ctx.tmp / "squashfs"
    src = base / "src"
    per_dir = 20                    # the directory itself and 19 files
    for i in range(n // per_dir):
        sub = src / f"d{i:03d}"
        sub.mkdir(parents=True)
        for j in range(per_dir - 1):
            (sub / f"f{j:02d}").write_bytes(b"x" * ((i * 31 + j * 7) % 3000))
    image = base / "fs.squashfs"
    subprocess.run(["mksquashfs", str(src), str(image), "-quiet", "-no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    mnt = base / "mnt"
    mnt.mkdir()
    m = str(mnt)
    return Workload(
        "squashfs-ls", f"squashfs image: ls -lAR of {n} entries",
        # -A, not -a: squashfuse lists no "." and "..", and the kernel's FUSE
        # adds none (vufuse adds them, as the kernel's squashfs has them)
        cmd=f"ls -lAR {m} | wc -l", check=f"find {m} | sort | md5sum",
        group="vufuse", reference=VUFUSE_REFERENCE,
        params={"image": str(image), "mnt": m, "ktype": "squashfs",
                "fuseprog": "squashfuse", "vutype": "squashfs"})


#: name -> builder, in run order; --only picks by name
WORKLOADS: dict[str, Callable[[Context], Workload]] = {
    "find": find_so, "tar": tar_include, "python": python_import,
    "exec": exec_loop, "statread": stat_read, "gcc": gcc_units,
    "git": git_status, "seqread": seq_read, "startup": startup,
    "vufuse-read": vufuse_read, "vufuse-tar": vufuse_tar,
    "squashfs-ls": squashfs_ls,
}

#: the groups of the workloads not in "main" (known before they are built)
WORKLOAD_GROUPS = {"seqread": "seqread", "startup": "startup",
                   "vufuse-read": "vufuse", "vufuse-tar": "vufuse",
                   "squashfs-ls": "vufuse"}
