"""vubinfmt: binfmt_misc inside the view (seed 002, "BINFMT for running
foreign code"). Real sessions: entries by extension and by magic, the
kernel's file formats, flags P, O, C and F, disable/enable/remove, bad
input, a foreign aarch64 binary through Debian's qemu-user-static, one
session as an unprivileged user, and nothing changed outside the view."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import NOBODY, REPO

BM = "/proc/sys/fs/binfmt_misc"
QEMU = "/usr/bin/qemu-aarch64-static"
QEMU_LINE = (r":qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00"
             r"\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff"
             r"\xff\xff\xff\xff\xfe\xff\xff\xff:" + QEMU + ":F")
DEBIAN_CONF = "/usr/lib/binfmt.d/qemu-aarch64.conf"   # qemu-user-static's
BUSYBOX = REPO / "build" / "foreign" / "busybox-arm64"
SETUP = f"vu_insmod vubinfmt && vumount -t vubinfmt none {BM} || exit 9\n"

VUX = "import sys\nprint('vux ran', sys.argv)\n"
# an interpreter that tells what it got: a python script (found through #!)
SHOW = """#!/usr/bin/python3
import os, sys
print("argv", sys.argv[1:])
if sys.argv[1].startswith("/proc/self/fd/"):
    print("fd", os.readlink(sys.argv[1]), open(sys.argv[1]).read().split()[0])
"""


def aarch64_hello(text: bytes = b"hello from aarch64\n") -> bytes:
    """A static aarch64 ELF that writes text and exits 7, byte by byte."""
    code = [0xd2800020,                     # mov x0, #1
            0x100000e1,                     # adr x1, text (7 words on)
            0xd2800002 | len(text) << 5,    # mov x2, #len
            0xd2800808,                     # mov x8, #64 (write)
            0xd4000001,                     # svc #0
            0xd28000e0,                     # mov x0, #7
            0xd2800ba8,                     # mov x8, #93 (exit)
            0xd4000001]                     # svc #0
    body = b"".join(struct.pack("<I", c) for c in code) + text
    base, entry = 0x400000, 0x400000 + 64 + 56
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 2, 0xb7, 1, entry, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    size = 64 + 56 + len(body)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x10000)
    return header + phdr + body


def make_files(d: Path, owner: int | None = None) -> Path:
    files = {"hello.vux": VUX, "show.py": SHOW, "m.bin": "MAGIC!xyz\n",
             "noexec.vux": VUX}
    for name, text in files.items():
        (d / name).write_text(text)
        (d / name).chmod(0o644 if name == "noexec.vux" else 0o755)
    (d / "hello-arm64").write_bytes(aarch64_hello())
    (d / "hello-arm64").chmod(0o755)
    if owner is not None:
        for p in [d, *d.iterdir()]:
            os.chown(p, owner, owner)
    return d


EXEC_PY = """import errno, os, sys
try: os.execv(sys.argv[1], sys.argv[1:])
except OSError as e: print("exec", errno.errorcode[e.errno])"""


def errno_of(path: str, *argv: str) -> str:
    """A shell line: exec path from python, print the errno name if it fails
    (a shell would run a file it cannot exec as a script)."""
    return " ".join(shlex.quote(a) for a in ("python3", "-c", EXEC_PY, path, *argv)) + "\n"


def needs_qemu(test):
    """qemu-user-static is installed by make (DEB_PACKAGES): its absence
    fails the test rather than skipping it."""
    def run(*args, **kwargs):
        assert os.access(QEMU, os.X_OK), f"{QEMU} missing: `make deps` installs " \
            "Debian's qemu-user-static"
        return test(*args, **kwargs)
    return functools.wraps(test)(run)


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


def test_extension_entry_and_files(run_umvu, files):
    res = run_umvu(SETUP + f"""
        cd {files}
        ls -l {BM} | awk 'NR > 1 {{print $1, $NF}}'
        cat {BM}/status
        echo ':vux:E::vux::/usr/bin/python3:' > {BM}/register
        ls {BM}
        cat {BM}/vux
        ./hello.vux a b
        {files}/hello.vux c
        sh -c './hello.vux from-sh'
        ./noexec.vux; echo "not executable: $?"
        """)
    assert res.stdout == (
        "--w------- register\n-rw-r--r-- status\n"
        "enabled\n"
        "register\nstatus\nvux\n"
        "enabled\ninterpreter /usr/bin/python3\nflags: \nextension .vux\n"
        "vux ran ['./hello.vux', 'a', 'b']\n"
        f"vux ran ['{files}/hello.vux', 'c']\n"
        "vux ran ['./hello.vux', 'from-sh']\n"
        "not executable: 126\n"), res.stderr


def test_magic_entry_disable_enable_remove(run_umvu, files):
    res = run_umvu(SETUP + f"""
        cd {files}
        echo ':m:M:0:MAGIC!::{files}/show.py:' > {BM}/register
        echo ':x:M:2:G\\x49C:\\xff\\xdf\\xff:{files}/show.py:' > {BM}/register
        cat {BM}/m {BM}/x
        ./m.bin 1
        echo 0 > {BM}/m; cat {BM}/m | head -1
        ./m.bin 2                       # x (offset 2, a mask) matches now
        echo 0 > {BM}/x
        {errno_of("./m.bin")}
        echo 1 > {BM}/m; ./m.bin 3
        echo 0 > {BM}/status; cat {BM}/status
        {errno_of("./m.bin")}
        echo 1 > {BM}/status; ./m.bin 4
        echo -1 > {BM}/m; ls {BM} | tr '\\n' ' '; echo
        {errno_of("./m.bin")}
        echo -1 > {BM}/status; ls {BM} | tr '\\n' ' '; echo
        """)
    assert res.stdout == (
        f"enabled\ninterpreter {files}/show.py\nflags: \noffset 0\n"
        "magic 4d4147494321\n"
        f"enabled\ninterpreter {files}/show.py\nflags: \noffset 2\n"
        "magic 474943\nmask ffdfff\n"
        "argv ['./m.bin', '1']\n"
        "disabled\n"
        "argv ['./m.bin', '2']\n"
        "exec ENOEXEC\n"
        "argv ['./m.bin', '3']\n"
        "disabled\n"
        "exec ENOEXEC\n"
        "argv ['./m.bin', '4']\n"
        "register status x \n"
        "exec ENOEXEC\n"
        "register status \n"), res.stderr


def test_flags_preserve_argv0_and_open_binary(run_umvu, files):
    """binfmt_misc's argv: [interpreter, file name, argv[0] with P,
    argv[1:]]; with O the name is /proc/self/fd/N, a descriptor of the file
    on the lowest number free after the exec (python's 5 and 6 are
    close-on-exec)."""
    keep = "python3 -c 'import os; os.execv(\"./m.bin\", [\"KEEP\", \"{}\"])'"
    res = run_umvu(SETUP + f"""
        cd {files}
        echo ':p:M::MAGIC!::{files}/show.py:P' > {BM}/register
        {keep.format(1)}
        ./m.bin 2
        echo -1 > {BM}/p
        echo ':o:M::MAGIC!::{files}/show.py:O' > {BM}/register
        exec 3</dev/null 4<>/dev/null 7</dev/null
        python3 -c 'import os
a, b = os.open("/dev/null", 0), os.open("/dev/null", 0)   # close-on-exec
os.execv("./m.bin", ["m", "3"])'
        echo -1 > {BM}/o
        echo ':c:M::MAGIC!::{files}/show.py:PCF' > {BM}/register
        sed -n 3p {BM}/c
        {keep.format(4)}
        """)
    assert res.stdout == (
        "argv ['./m.bin', 'KEEP', '1']\n"
        "argv ['./m.bin', './m.bin', '2']\n"
        "argv ['/proc/self/fd/5', '3']\n"
        f"fd {files}/m.bin MAGIC!xyz\n"
        "flags: POCF\n"
        "argv ['/proc/self/fd/5', 'KEEP', '4']\n"
        f"fd {files}/m.bin MAGIC!xyz\n"), res.stderr


BAD_LINES = [
    ":short:",                                          # < 11 bytes
    ":name:X::abc::/bin/true:",                         # type
    ":name:MM::abc::/bin/true:",                        # type
    ":name:M:1x:abc::/bin/true:",                       # offset
    ":name:M:::::/bin/true:",                           # empty magic
    ":name:M::abc:\\xff:/bin/true:",                    # mask size
    ":name:M::ab\\xzz::/bin/true:",                     # bad escape
    ":name:M:250:abcdefghijk::/bin/true:",              # beyond 256 bytes
    ":name:E::a/b::/bin/true:",                         # extension with /
    ":name:E::ext:::",                                  # empty interpreter
    ":name:E::ext::/bin/true:PQ",                       # flags
    ":name:E::ext::/bin/true:P:extra",                  # too many fields
    ":a/b:E::ext::/bin/true:",                          # name
    ":..:E::ext::/bin/true:",                           # name
    "no delimiters here at all",
]


def test_bad_input(run_umvu, files):
    writes = "".join(f"printf '%s\\n' {line!r} > {BM}/register; echo \"rc $?\"\n"
                     for line in BAD_LINES)
    res = run_umvu(SETUP + f"""
        cd {files}
        {writes}
        echo ':ok:E::vux::/usr/bin/python3:' > {BM}/register; echo "ok $?"
        echo ':ok:E::vuy::/usr/bin/python3:' > {BM}/register; echo "again $?"
        echo 2 > {BM}/ok; echo "command $?"
        echo ':gone:E::vuz::/no/such/interp:' > {BM}/register; echo "lazy $?"
        echo ':fixed:E::vuw::/no/such/interp:F' > {BM}/register; echo "fixed $?"
        cp hello.vux hello.vuz
        {errno_of("./hello.vuz")}
        ./hello.vux still
        ls {BM} | tr '\\n' ' '; echo
        touch {BM}/new; echo "create $?"
        rm {BM}/ok; echo "rm $?"
        """)
    lines = res.stdout.splitlines()
    assert lines[:len(BAD_LINES)] == ["rc 1"] * len(BAD_LINES), res.stdout + res.stderr
    assert lines[len(BAD_LINES):] == [
        "ok 0", "again 1", "command 1", "lazy 0", "fixed 1", "exec ENOENT",
        "vux ran ['./hello.vux', 'still']", "gone ok register status ",
        "create 1", "rm 1"], res.stderr
    # every refusal says why on umvu's log stream, and the writer gets EINVAL
    assert res.stderr.count("umvu: vubinfmt: register:") == len(BAD_LINES) + 2
    assert res.stderr.count("write error: Invalid argument") == len(BAD_LINES) + 1
    assert "umvu: vubinfmt: register: ok exists" in res.stderr
    assert "interpreter /no/such/interp: No such file or directory" in res.stderr
    assert "type is M (magic) or E (extension)" in res.stderr


@needs_qemu
def test_foreign_binary_through_qemu(run_umvu, files):
    res = run_umvu(SETUP + f"""
        cd {files}
        {errno_of("./hello-arm64")}
        echo '{QEMU_LINE}' > {BM}/register
        cat {BM}/qemu-aarch64
        ./hello-arm64; echo "rc $?"
        """)
    assert res.stdout == (
        "exec ENOEXEC\n"
        f"enabled\ninterpreter {QEMU}\nflags: F\noffset 0\n"
        "magic 7f454c460201010000000000000000000200b700\n"
        "mask ffffffffffffff00fffffffffffffffffeffffff\n"
        "hello from aarch64\nrc 7\n"), res.stderr


@pytest.fixture(scope="session")
def busybox() -> Path:
    """Debian's arm64 busybox-static (make foreign fetches it)."""
    if not BUSYBOX.exists():
        subprocess.run(["make", "-s", "-C", str(REPO), "foreign"],
                       capture_output=True, timeout=300)
    if not BUSYBOX.exists():
        pytest.fail(f"{BUSYBOX} missing and `make foreign` could not fetch it")
    return BUSYBOX


@needs_qemu
def test_seed_002_foreign_busybox(run_umvu, tmp_path, busybox):
    """The seed's session, with Debian's own registration of qemu (flags
    OPF, its -binfmt-P name): a foreign busybox, its shell, and the applets
    that shell runs by exec'ing itself (foreign too)."""
    shutil.copy(busybox, tmp_path / "busybox")
    res = run_umvu(SETUP + f"""
        cd {tmp_path}
        cat {DEBIAN_CONF} > {BM}/register
        sed -n 2,3p {BM}/qemu-aarch64
        uname -m
        ./busybox uname -m
        ./busybox sh -c 'echo "$(uname -m) shell"; ls -d /etc /usr | cat'
        echo -1 > {BM}/qemu-aarch64
        echo '{QEMU_LINE}' > {BM}/register
        ./busybox echo brief line
        """)
    assert res.stdout == (
        "interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n"
        "x86_64\naarch64\naarch64 shell\n/etc\n/usr\nbrief line\n"), res.stderr


def test_scope_and_files_below_mounts(run_umvu, tmp_path):
    """Source PATH: only executables below it (in the view); host files and
    files below a vufs mount go through the hook alike, and plain execs
    below a mount still work."""
    scope, src = tmp_path / "in", tmp_path / "src"
    for d in (scope, src, scope / "sub"):
        d.mkdir()
    make_files(scope)
    make_files(src)
    shutil.copy("/bin/true", src / "true")
    (src / "script.sh").write_text("#!/bin/sh\necho script \"$@\"\n")
    (src / "script.sh").chmod(0o755)
    res = run_umvu(f"""
        vu_insmod vubinfmt vufs || exit 9
        vumount -t vubinfmt {scope} {BM} || exit 9
        echo ':vux:E::vux::/usr/bin/python3:' > {BM}/register
        {scope}/hello.vux in
        {errno_of(str(src / "hello.vux"))}
        vumount -t vufs {src} {scope}/sub || exit 9
        {scope}/sub/hello.vux via-vufs
        cd {scope}/sub && ./hello.vux relative && cd /
        {scope}/sub/script.sh below-vufs
        {scope}/sub/true && echo "true ran"
        vuumount {BM}
        {errno_of(str(scope / "hello.vux"))}
        """)
    assert res.stdout == (
        f"vux ran ['{scope}/hello.vux', 'in']\n"
        "exec ENOEXEC\n"
        f"vux ran ['{scope}/sub/hello.vux', 'via-vufs']\n"
        "vux ran ['./hello.vux', 'relative']\n"
        "script below-vufs\ntrue ran\nexec ENOEXEC\n"), res.stderr


def test_unprivileged_session(run_umvu, user, workdir):
    """The key session as root and as uid 65534: register, run, remove."""
    make_files(workdir, NOBODY if user else None)
    line = QEMU_LINE if os.access(QEMU, os.X_OK) else ":arm:E::none::/bin/true:"
    res = run_umvu(SETUP + f"""
        cd {workdir}
        id -u
        echo ':vux:E::vux::/usr/bin/python3:' > {BM}/register
        echo '{line}' > {BM}/register
        ./hello.vux me
        {"./hello-arm64" if line == QEMU_LINE else "echo hello from aarch64"}
        echo -1 > {BM}/vux
        {errno_of("./hello.vux")}
        """, user=user)
    uid = NOBODY if user else 0
    assert res.stdout == (f"{uid}\nvux ran ['./hello.vux', 'me']\n"
                          "hello from aarch64\nexec ENOEXEC\n"), res.stderr


def test_outside_unchanged(run_umvu, run_native, files):
    """A process outside the view (started while the view runs) sees no
    entry, and the host's binfmt_misc is what it was."""
    def host_state():
        try:
            return sorted(os.listdir(BM))
        except OSError as exc:
            return exc.errno
    before = host_state()
    flag = files / "registered"
    proc = run_umvu.popen(SETUP + f"""
        cd {files}
        echo ':vux:E::vux::/usr/bin/python3:' > {BM}/register
        echo ':m:M::MAGIC!::{files}/show.py:' > {BM}/register
        touch {flag}
        while [ ! -e {files}/done ]; do sleep 0.05; done
        ./hello.vux inside
        """)
    for _ in range(400):
        if flag.exists() or proc.poll() is not None:
            break
        subprocess.run(["sleep", "0.05"])
    assert flag.exists(), proc.communicate()
    outside = run_native(f"cd {files}\n" + errno_of("./hello.vux") + errno_of("./m.bin"))
    (files / "done").touch()
    out, err = proc.communicate(timeout=60)
    assert outside.stdout == "exec ENOEXEC\nexec ENOEXEC\n", outside.stderr
    assert out == "vux ran ['./hello.vux', 'inside']\n", err
    assert host_state() == before
