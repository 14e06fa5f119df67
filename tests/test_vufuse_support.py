"""Shared helpers of the vufuse end-to-end tests (tests/test_vufuse_*.py).

This file holds no tests. It builds file-system images WITHOUT privileges
(every image builder runs as uid 65534 through setpriv: mke2fs -d, mcopy,
xorriso, mksquashfs, zip, mkfs.exfat), computes manifests of source trees,
and parses what the sessions print. The umvu sessions themselves are run by
the `vu` fixture of tests/_vufs_helpers.py (itself on top of conftest's
run_umvu: `umvu -N -- bash -c SCRIPT`, optionally as uid 65534, with a hang
turned into a failure).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import VENV_BIN

NOBODY = 65534
TIMEOUT = 120
MiB = 1024 * 1024
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: PATH inside the sessions: the venv first (vumount...), then sbin
#: (fuse2fs, mount.exfat-fuse and the e2fs tools live there on Debian).
VIEW_PATH = f"{VENV_BIN}:{SBIN_PATH}"
VIEW_ENV = {"PATH": VIEW_PATH}


def tool(name: str) -> str:
    found = shutil.which(name, path=SBIN_PATH)
    if found is None:       # `make test` installs every one of them
        pytest.fail(f"{name} is not installed: run `make deps` (Debian package list in the Makefile)")
    return found


def nobody_tmp(prefix: str = "vufuse-test-") -> Path:
    """A directory below /tmp owned by 65534, mode 0755."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chown(d, NOBODY, NOBODY)
    d.chmod(0o755)
    return d


def chown_tree(path: Path, uid: int = NOBODY) -> None:
    os.lchown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, uid)


def as_nobody(argv, cwd=None, check=True, input=None) -> subprocess.CompletedProcess:
    """Run a host command unprivileged (uid/gid 65534), outside any view."""
    full = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--", *[str(a) for a in argv]]
    env = dict(os.environ, PATH=SBIN_PATH, LC_ALL="C", HOME="/nonexistent")
    proc = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def host(argv, cwd=None, check=False) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=SBIN_PATH, LC_ALL="C")
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env,
                          capture_output=True, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n"
                             f"{proc.stdout!r}\n{proc.stderr!r}")
    return proc


# ---------------------------------------------------------------------------
# source tree

BIG = 3 * MiB

#: the tree every read-only image is built from: relpath -> content;
#: directories end with "/"; symlinks are in SYMLINKS.
def _tree_files(rnd: random.Random) -> dict:
    return {
        "hello.txt": b"hello world\n",
        "empty": b"",
        "one.txt": b"1",
        "page.bin": rnd.randbytes(4096),
        "page1.bin": rnd.randbytes(4097),
        "odd.bin": rnd.randbytes(65537),
        "mid.bin": rnd.randbytes(200000),
        "big.bin": rnd.randbytes(BIG),
        "name with spaces.txt": b"spaces\n" * 100,
        "MixedCase Long Name.dat": b"mixed case\n" * 7,
        "script.sh": b"#!/bin/sh\necho script-ran\n",
        "sub/inner.txt": b"inner file\n",
        "sub/deeper/deep.bin": rnd.randbytes(10000),
        "sub/emptydir/": None,
    }


SYMLINKS = {"link": "hello.txt"}


def make_source_tree(dest: Path) -> Path:
    """The source tree, owned by 65534 (so that 65534 can build from it)."""
    src = dest / "src"
    src.mkdir()
    for rel, data in _tree_files(random.Random(20240204)).items():
        p = src / rel
        if data is None:
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (src / "script.sh").chmod(0o755)
    for name, target in SYMLINKS.items():
        os.symlink(target, src / name)
    chown_tree(src)
    return src


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(src: Path) -> dict:
    """relpath -> ("d",) | ("f", size, sha256) | ("l", target)."""
    out = {}
    for root, dirs, files in os.walk(src):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(src))
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d",)
            else:
                out[rel] = ("f", p.stat().st_size, sha256_file(p))
    return out


# ---------------------------------------------------------------------------
# images, built by uid 65534

EXT_KINDS = ("ext2", "ext3", "ext4")


def build_image(kind: str, src: Path, img: Path, size: str = "32M",
                root_owner: int | None = None) -> Path:
    """Build an image of `kind` from `src`, unprivileged."""
    if kind in EXT_KINDS:
        argv = [tool("mke2fs"), "-q", "-F", "-t", kind]
        if root_owner is not None:
            argv += ["-E", f"root_owner={root_owner}:{root_owner}"]
        as_nobody(argv + ["-d", src, img, size])
    elif kind == "fat":
        as_nobody([tool("mkfs.vfat"), "-C", img, "32768"])
        entries = sorted(str(p) for p in src.iterdir())
        as_nobody([tool("mcopy"), "-s", "-i", img, *entries, "::"])
    elif kind == "iso9660":
        as_nobody([tool("xorriso"), "-as", "mkisofs", "-quiet", "-R",
                   "-o", img, src])
    elif kind == "squashfs":
        as_nobody([tool("mksquashfs"), src, img, "-quiet"])
    elif kind == "zip":
        as_nobody([tool("zip"), "-qry", img, "."], cwd=src)
    elif kind == "exfat":
        # nothing writes into an exfat image without mounting it: an empty one
        as_nobody(["truncate", "-s", "32M", img])
        as_nobody([tool("mkfs.exfat"), img])
    else:
        raise ValueError(kind)
    return img


# ---------------------------------------------------------------------------
# what the sessions print

def sections(text: str) -> dict:
    """Split output at '== NAME' lines: NAME -> list of lines."""
    out, cur = {}, None
    for line in text.splitlines():
        if line.startswith("== "):
            cur = line[3:].strip()
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out


def values(text: str) -> dict:
    """KEY=VALUE lines (the status lines the scripts print)."""
    out = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key and key.replace("_", "").isalnum():
            out[key] = value
    return out


#: bash snippet: list a mounted tree and checksum every regular file.
#: (find's %y: d, f, l; %l: the link target.)
LIST_AND_SUM = r'''
cd "$MNT" || exit 99
echo "== list"
find . -mindepth 1 -printf '%y\t%P\t%s\t%l\n' | LC_ALL=C sort
echo "== sums"
find . -mindepth 1 -type f -exec sha256sum {} + | LC_ALL=C sort -k2
echo "== end"
cd /
'''


def parse_listing(res_out: str) -> dict:
    """What LIST_AND_SUM printed, as a manifest like `manifest()`."""
    secs = sections(res_out)
    sums = {}
    for line in secs.get("sums", []):
        digest, _, name = line.partition("  ")
        sums[name[2:] if name.startswith("./") else name] = digest
    out = {}
    for line in secs.get("list", []):
        kind, rel, size, target = line.split("\t", 3)
        if kind == "d":
            out[rel] = ("d",)
        elif kind == "l":
            out[rel] = ("l", target)
        elif kind == "f":
            out[rel] = ("f", int(size), sums.get(rel, "<no checksum>"))
        else:
            out[rel] = (kind,)
    return out


_PROGRAMS = ("sha256sum", "find", "cat", "ls", "vumount", "vuumount", "vu_insmod",
             "bash", "cp", "rm", "mv", "mkdir", "touch", "dd", "truncate", "wc",
             "umvu", "mount.exfat-fuse", "/usr/sbin/mount.exfat-fuse", "python3",
             "stat", "df", "ln", "chmod", "head", "rmdir", "Traceback", "KeyError",
             "OSError", "PermissionError", "FileNotFoundError")


def errors_of(res) -> str:
    """The error lines of a session's stderr (FUSE programs' chatter left out)."""
    lines = res.err.splitlines()
    keep = [line for line in lines if line.split(":", 1)[0].strip() in _PROGRAMS]
    if not keep:
        keep = lines[-30:]
    return "\n".join(keep[:60])


def short(res) -> str:
    """A failure message: the script, stdout and the error lines only."""
    return (f"<umvu rc={res.rc}\n--- script ---\n{res.script}\n--- stdout ---\n"
            f"{res.out[-6000:]}--- error lines of stderr ---\n{errors_of(res)}>")
