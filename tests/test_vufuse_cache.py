"""vufuse's attribute cache and read-ahead (modules/vufuse/pathops.py) never
serve stale data after a change made through the view, and sequential reads
take far fewer READ requests than pages.

The same Python script runs on a host directory and on a vufuse mount:
fuse-zip (attr_valid and entry_valid 1 s: everything below runs well
within them, so a cache that missed a change would show it) and fuse2fs
(entry_valid 1 s, attr_valid 0: the entry cache and read-ahead). Each
step changes something (write, truncate, chmod, rename, unlink, create, a
change by another process, a write through another descriptor while one
reads) and then looks (stat, lookup, read); the outputs must be equal.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from test_vufuse_support import VIEW_ENV, build_image, nobody_tmp

SCRIPT = textwrap.dedent(r'''
    import os, stat, subprocess, sys
    top = sys.argv[1]
    links = sys.argv[2] == "links"
    p = lambda *a: print(*a, flush=True)

    def st(name):
        try:
            s = os.stat(os.path.join(top, name))
        except OSError as e:
            return f"{name}: errno {e.errno}"
        if stat.S_ISREG(s.st_mode):
            return f"{name}: {stat.filemode(s.st_mode)} size {s.st_size} nlink {s.st_nlink}"
        return f"{name}: {stat.filemode(s.st_mode)}"    # dirs: sizes and links vary

    f = os.path.join(top, "f")
    with open(f, "w") as fp:
        fp.write("abc")
    p("create", st("f"))
    for i in range(3):                       # write then stat size
        with open(f, "a") as fp:
            fp.write("x" * (1000 * (i + 1)))
        p("append", st("f"))
    fd = os.open(f, os.O_RDWR)
    os.write(fd, b"y" * 5000)
    p("write, open fd", st("f"), os.fstat(fd).st_size)
    os.ftruncate(fd, 10)
    p("ftruncate", st("f"), os.fstat(fd).st_size)
    os.close(fd)
    os.truncate(f, 7)
    p("truncate", st("f"))
    os.chmod(f, 0o600)
    p("chmod", st("f"))
    os.chmod(f, 0o751)
    p("chmod", st("f"))
    os.rename(f, os.path.join(top, "g"))
    p("rename", st("f"), st("g"))
    if links:
        os.link(os.path.join(top, "g"), os.path.join(top, "h"))
        p("link", st("g"), st("h"))
    else:
        os.rename(os.path.join(top, "g"), os.path.join(top, "h"))
        with open(os.path.join(top, "g"), "w") as fp:
            fp.write("g")
        p("create", st("g"), st("h"))
    os.unlink(os.path.join(top, "g"))
    p("unlink", st("g"), st("h"))
    os.mkdir(os.path.join(top, "d"))
    p("mkdir", st("d"))
    os.rename(os.path.join(top, "h"), os.path.join(top, "d", "h"))
    p("rename into", st("h"), st("d/h"), st("d"))
    # another process changes the file; this one looks
    subprocess.run(["sh", "-c", f"printf 0123456789ABCDEF > {top}/d/h; chmod 640 {top}/d/h"], check=True)
    p("other process", st("d/h"))
    subprocess.run(["rm", f"{top}/d/h"], check=True)
    p("other process rm", st("d/h"))
    subprocess.run(["sh", "-c", f"echo new > {top}/d/h"], check=True)
    p("other process create", st("d/h"))
    # read-ahead: a reader, a writer through another descriptor, the reader again
    big = os.path.join(top, "big")
    with open(big, "wb") as fp:
        fp.write(b"a" * 300000)
    r = os.open(big, os.O_RDONLY)
    p("read", os.read(r, 10), os.read(r, 10))
    w = os.open(big, os.O_WRONLY)
    os.pwrite(w, b"B" * 100, 20)
    p("read after write", os.read(r, 10))
    subprocess.run(["sh", "-c", f"printf CCCC | dd of={big} bs=1 seek=30 conv=notrunc status=none"], check=True)
    p("read after other process", os.read(r, 10))
    os.ftruncate(w, 45)
    p("read after truncate", os.read(r, 100), os.read(r, 10))
    os.close(w)
    os.close(r)
    p("final", st("big"), sorted(os.listdir(top)), sorted(os.listdir(os.path.join(top, "d"))))
''')


@pytest.fixture
def area():
    d = nobody_tmp("vufuse-cache-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _image(area: Path, files: dict[str, bytes], size="64M") -> Path:
    src = area / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    subprocess.run(["chown", "-R", "65534:65534", str(src)], check=True)
    return build_image("ext4", src, area / "img", size, root_owner=0)


@pytest.mark.parametrize("kind", ["zip", "ext4"])
def test_no_stale_attributes_or_data_after_changes(run_umvu, area, kind):
    links = "links" if kind == "ext4" else "nolinks"
    (area / "script.py").write_text(SCRIPT)
    host_dir = area / "host"
    host_dir.mkdir()
    native = subprocess.run(["python3", str(area / "script.py"), str(host_dir), links],
                            capture_output=True, text=True, timeout=60)
    assert native.returncode == 0, native.stderr
    if kind == "ext4":
        img = _image(area, {"seed": b"seed\n"})
    else:
        src = area / "src"
        src.mkdir()
        (src / "seed").write_text("seed\n")
        img = build_image("zip", src, area / "img.zip")
    mnt = area / "mnt"
    mnt.mkdir()
    res = run_umvu(f"""
        vu_insmod vufuse || exit 90
        vumount -t vufuse{kind} -o rw+ {img} {mnt} || exit 91
        rm {mnt}/seed || exit 92
        rm -rf {mnt}/lost+found
        python3 {area}/script.py {mnt} {links}
    """, extra_env=VIEW_ENV, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == native.stdout.splitlines()


def test_sequential_read_takes_few_requests(run_umvu, area):
    data = bytes(range(256)) * (20 * 4096)          # 20 MiB
    img = _image(area, {"big": data}, size="64M")
    mnt = area / "mnt"
    mnt.mkdir()
    log = area / "umvu.log"
    res = run_umvu(f"""
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 {img} {mnt} || exit 91
        dd if={mnt}/big bs=4k status=none | sha256sum
        vuumount {mnt}
    """, extra_env=VIEW_ENV, timeout=120, opts=("-N", "-d", "m", "-o", str(log)))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    counts = re.findall(r"vufuse: requests sent: (.*)", log.read_text())
    assert counts, log.read_text()[-2000:]
    reads = int(re.search(r"\bREAD (\d+)", counts[-1]).group(1))
    pages = len(data) // 4096                       # 5120 read(2) calls of 4 KiB
    assert reads <= pages // 16, counts[-1]
