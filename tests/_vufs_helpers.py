"""Helpers shared by the vufs tests (tests/test_vufs*.py).

The sessions themselves are started by the `run_umvu` fixture of
tests/conftest.py (`umvu -N -- bash -c SCRIPT`, optionally as uid 65534);
this module adds what only the vufs tests need: scratch directories that
uid 65534 can reach, tree manifests, and a thin wrapper that dedents
scripts, applies the 120 s limit and keeps the script for error messages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import textwrap

import pytest

NOBODY = 65534
TIMEOUT = 120


class Result:
    """What one umvu session printed."""

    def __init__(self, proc: subprocess.CompletedProcess, script: str):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.script = script

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def sections(self) -> dict:
        return sections(self.out)

    def __repr__(self):
        return (f"<umvu rc={self.rc}\n--- script ---\n{self.script}\n"
                f"--- stdout ---\n{self.out}--- stderr ---\n{self.err}>")


@pytest.fixture
def vu(run_umvu):
    """vu(script, user=None, env=None, cwd=None) -> Result; user=NOBODY runs
    the session as uid/gid 65534 (HOME: a fresh directory it owns)."""
    def run(script: str, user=None, env: dict | None = None, cwd=None,
            timeout: int = TIMEOUT) -> Result:
        script = textwrap.dedent(script)
        proc = run_umvu(script, user=user, extra_env=env, cwd=cwd, timeout=timeout)
        return Result(proc, script)
    run.home = run_umvu.home
    return run


def native(script: str, cwd: str = "/", env: dict | None = None) -> Result:
    """The same bash script without umvu, for comparisons."""
    full_env = dict(os.environ, LC_ALL="C")
    full_env.update(env or {})
    script = textwrap.dedent(script)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          errors="replace", cwd=cwd, env=full_env, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    return Result(proc, script)


def make_tmp(prefix: str = "vufs-test-", owner: int | None = None) -> str:
    """A directory below /tmp that 65534 can reach (pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


@pytest.fixture
def tdir():
    """A fresh world-reachable temp dir owned by root, removed afterwards."""
    path = make_tmp()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def udir(unprivileged):
    """A fresh temp dir owned by 65534, removed afterwards."""
    path = make_tmp(owner=NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def chown_tree(path: str, uid: int, gid: int | None = None) -> None:
    gid = uid if gid is None else gid
    for dirpath, dirnames, filenames in os.walk(path):
        os.lchown(dirpath, uid, gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def write(path: str, text: str = "", mode: int | None = None) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)
    return path


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def manifest(top: str, times: bool = True) -> dict:
    """Every entry below top (top included): kind + content hash or link
    target, mode, uid, gid, mtime_ns (when times), inode, link count."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        names = [""] if dirpath == top else []
        for name in names + sorted(dirnames + filenames):
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                what = "f:" + sha256(path)
            elif stat.S_ISLNK(st.st_mode):
                what = "l:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                what = "d"
            else:
                what = f"o:{stat.S_IFMT(st.st_mode):o}"
            entry = (what, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if times:
                entry += (st.st_mtime_ns, st.st_ino, st.st_nlink)
            out[rel] = entry
    return out


def diff_manifest(before: dict, after: dict) -> list[str]:
    return [f"{k}: {before.get(k)} -> {after.get(k)}"
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def sections(text: str) -> dict:
    """Split output made of `== NAME` header lines into {NAME: body}."""
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("== "):
            name = line[3:].strip()
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}
