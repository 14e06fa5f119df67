"""umvu run by an unprivileged user (uid/gid 65534): the pass-through
behaviour holds, and nothing outside the view changes, not even with a
virtual root (unrealuidgid) trying hard."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from conftest import NOBODY, nobody_dir
from test_passthrough import BASH_FEATURES, THREADS_PY

pytestmark = pytest.mark.usefixtures("unprivileged")


def native_as_nobody(script: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", "--", "bash", "-c", script],
                          env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def manifest(top) -> dict:
    """Everything stat and the contents say about a tree (atime aside)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames + ([""] if dirpath == str(top) else []):
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, top)] = describe(path)
    return found


def describe(path) -> tuple:
    st = os.lstat(path)
    entry = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
             st.st_ctime_ns, st.st_nlink)
    if os.path.islink(path):
        return entry + (os.readlink(path),)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return entry + (hashlib.sha256(f.read()).hexdigest(),)
    return entry


@pytest.fixture
def nobody_work():
    d = nobody_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def root_tree():
    """A tree 65534 may read but not change (like the rest of the system)."""
    top = nobody_dir("umvu-roottree-")
    os.chown(top, 0, 0)
    (top / "sub").mkdir()
    for i in range(5):
        (top / f"f{i}").write_text(f"file {i}\n" * (i + 1))
    (top / "sub" / "g").write_text("deep\n")
    (top / "sub" / "secret").write_text("root only\n")
    (top / "sub" / "secret").chmod(0o600)
    os.symlink("f1", top / "link")
    os.utime(top / "f0", (1_500_000_000, 1_500_000_000))
    yield top
    shutil.rmtree(top, ignore_errors=True)


def test_bash_features_as_native(run_umvu, env, nobody_work):
    (nobody_work / "n").mkdir()
    (nobody_work / "u").mkdir()
    for d in ("n", "u"):
        os.chown(nobody_work / d, NOBODY, NOBODY)
    want = native_as_nobody(BASH_FEATURES, env, nobody_work / "n")
    assert want.returncode == 0, want.stderr
    got = run_umvu(BASH_FEATURES, user=NOBODY, cwd=nobody_work / "u")
    assert (got.returncode, got.stdout, got.stderr) == \
        (want.returncode, want.stdout, want.stderr)


def test_threads(run_umvu, nobody_work):
    res = run_umvu(["python3", "-c", THREADS_PY, nobody_work], user=NOBODY)
    assert res.stdout == "errors []\nfiles True\nsizes {20000}\n", res.stderr
    assert {os.stat(p).st_uid for p in nobody_work.iterdir()} == {NOBODY}


@pytest.mark.parametrize("script,status", [
    ("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137), ("kill -15 $$", 143),
], ids=["exit0", "exit3", "SIGKILL", "SIGTERM"])
def test_exit_status(run_umvu, script, status):
    assert run_umvu(["sh", "-c", script], user=NOBODY).returncode == status


def test_rc_file_and_identity(run_umvu):
    rc = run_umvu.home(NOBODY) / "rc"
    rc.write_text("vu_insmod unrealuidgid\necho rc as $(id -u)\n")
    res = run_umvu("vu_lsmod; id -u; vusu -c 'id -u'; echo $UMVU_PID > /dev/null",
                   user=NOBODY, opts=("-f", str(rc)))
    assert res.stdout == f"rc as {NOBODY}\nunrealuidgid: virtual uid/gid\n{NOBODY}\n0\n"
    assert res.returncode == 0, res.stderr


ATTACKS = [
    'rm -rf "$T"/*', "rm -f f0", "rm link", "echo changed > f1", "echo new > new",
    "mkdir newdir", 'chmod 777 "$T"', "chmod 777 f2", "chown 1:1 f3",
    "touch -d 2001-01-01 f0", "ln -s /etc/passwd sub/evil", "mv f4 f4.moved",
    "cat sub/secret", "truncate -s 0 f2", "rmdir sub", "cp /etc/hostname sub/",
    "echo x >> /etc/passwd", "touch /etc/umvu-test-file",
]


def test_nothing_outside_the_view_changes(run_umvu, root_tree, nobody_work):
    attack = nobody_work / "attack.sh"
    attack.write_text('id -u\ncd "$T" || exit 99\n' + "".join(
        f'{{ {cmd}; }} 2>/dev/null; echo "$?: {cmd}"\n' for cmd in ATTACKS))
    before = manifest(root_tree)
    etc = {p: describe(p) for p in ("/etc", "/etc/passwd")}
    res = run_umvu(f"vu_insmod unrealuidgid && vusu -c 'sh {attack}'", user=NOBODY,
                   extra_env={"T": str(root_tree)})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "0"          # virtual root...
    # ...but every change is refused by the kernel: the real uid is 65534
    assert [l for l in lines[1:] if l.startswith("0:")] == []
    assert len(lines) == 1 + len(ATTACKS)
    assert manifest(root_tree) == before
    assert {p: describe(p) for p in etc} == etc
    assert not os.path.exists("/etc/umvu-test-file")
