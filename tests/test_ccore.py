"""The boundary between Python and the C core (umvu/ccore.py, csrc/): rows
built by field name, and the descriptor calls C lets through alone.

The end-to-end tests count Python's entries with --trace, which logs one
line for every call that reached Python."""

from __future__ import annotations

import re
import textwrap

import pytest

from umvu import ccore


def c_fields(struct: str) -> tuple[str, ...]:
    return tuple(name for name, _ in ccore.ffi.typeof(f"struct {struct}").fields)


def test_rows_are_the_c_structs_field_for_field():
    assert ccore.FastRow._fields == c_fields("umvu_fast_row")
    assert ccore.MountRow._fields == c_fields("umvu_mount")


def test_fast_rows_are_given_by_name_only():
    """A positional tuple (whose length drifted once: 8 values for 9
    fields) is refused; a FastRow names what it leaves out."""
    fd_row = ccore.FastRow(ccore.FAST_FD, path=0, path2=1)
    assert (fd_row.follow, fd_row.rewrite, fd_row.empty) == (ccore.FOLLOW_ALWAYS, 0, -1)
    with pytest.raises(AttributeError):
        ccore.set_fast_rows({0: (ccore.FAST_FD, 0, -1, 1, -1, 0, -1, -1)})
    ccore.set_fast_rows({0: fd_row, 1: ccore.RESUME})
    ccore.set_fast_rows({})


def test_mount_rows_take_the_layer_protocol():
    ccore.set_mounts([("/a",), ("/b", "/host/b"),
                      ccore.MountRow("/c", "/top", "/bottom", ".-", "\x7f"),
                      ccore.MountRow("/d", "/top", "/bottom")])   # layers, no protocol
    ccore.set_mounts([])


#: a module that traps a descriptor call and answers none of them
FDTRAP = '''\
from umvu.module import Module


class FdTrap(Module):
    name = "fdtrap"
    description = "traps fchmod, answers nothing"
    syscalls = ("fchmod",)
'''

#: python3 program: prints the plain descriptor's number, then does `calls`
PROGRAM = """\
import os, sys
plain = os.open(sys.argv[1], os.O_RDONLY)
print("plain", plain, flush=True)
for i in range(40):
    os.pread(plain, 10, 0)
    os.fchmod(plain, 0o644)
"""


def python_entries(trace: str, pid_calls: str, fd: int) -> list[str]:
    """The --trace lines of calls named by the regex pid_calls on fd."""
    return re.findall(rf"\] (?:{pid_calls})\({fd}, .*", trace)


def plain_fd(out: str, name: str = "plain") -> int:
    found = re.findall(rf"^{name} (\d+)$", out, re.M)
    assert found, out
    return int(found[-1])


def test_a_module_trapping_a_descriptor_call_with_vufs_active(run_umvu, tmp_path):
    """Defect 1: the vfs gave the C core an 8-value row for descriptor
    calls where 9 were read, so vu_insmod failed with EIO (ValueError)."""
    modules = run_umvu.home() / ".vu" / "modules"
    modules.mkdir(parents=True)
    (modules / "fdtrap.py").write_text(FDTRAP)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("through the bind\n")
    plain = tmp_path / "plain"
    plain.write_text("plain\n")
    log = tmp_path / "trace.log"
    res = run_umvu(textwrap.dedent(f"""\
        vu_insmod vufs && vumount -t vufs {tmp_path}/src {tmp_path}/view
        vu_insmod fdtrap; echo "insmod=$?"
        vu_lsmod
        cat {tmp_path}/view/f
        python3 -c '{PROGRAM}' {plain}
        chmod 600 {plain}; stat -c %a {plain}
        """), opts=("-N", "--trace", "-o", str(log)))
    assert "insmod=0\n" in res.stdout, res
    assert "fdtrap: traps fchmod, answers nothing\n" in res.stdout, res
    assert "through the bind\n" in res.stdout and res.stdout.endswith("600\n"), res
    assert "Traceback" not in res.stderr + log.read_text(), res
    # fchmod is trapped everywhere now; on a descriptor the view does not
    # mirror the C core lets it through
    fd = plain_fd(res.stdout)
    assert python_entries(log.read_text(), "fchmod", fd) == [], log.read_text()


def test_plain_descriptor_calls_stay_in_c_beside_a_watched_one(run_umvu, tmp_path):
    """Defect 2: a process holding a cow lower-layer file traps descriptor
    calls (its own filter); the C core must let those on its other
    descriptors through: the rows of the numbers a process alone traps
    reach C too."""
    lower, cow = tmp_path / "lower", tmp_path / "cow"
    (lower / "dir").mkdir(parents=True)
    cow.mkdir()
    (lower / "f").write_text("lower\n")
    plain = tmp_path / "plain"
    plain.write_text("0123456789" * 10)
    log = tmp_path / "trace.log"
    program = """\
import os, sys
low = os.open(sys.argv[1] + "/f", os.O_RDONLY)         # fstat, fchmod... trapped
plain = os.open(sys.argv[2], os.O_RDONLY)
print("plain", plain, flush=True)
print("low", low, flush=True)
for i in range(40):
    os.fchmod(plain, 0o644)
d = os.open(sys.argv[1] + "/dir", os.O_RDONLY)         # a merged directory:
for i in range(40):                                   # every fd call trapped
    os.pread(plain, 10, 0)
    os.lseek(plain, 0, 0)
    os.read(plain, 10)
    os.fchmod(plain, 0o644)
os.fchmod(low, 0o600)                                  # watched: copied up
print(os.read(low, 5), len(os.listdir(d)), os.stat(sys.argv[1] + "/f").st_mode & 0o777)
"""
    res = run_umvu(textwrap.dedent(f"""\
        vu_insmod vufs && vumount -t vufs -o cow {cow} {lower}
        python3 -c '{program}' {lower} {plain}
        """), opts=("-N", "--trace", "-o", str(log)))
    assert res.returncode == 0 and res.stdout.endswith("b'lower' 0 384\n"), res
    trace = log.read_text()
    fd = plain_fd(res.stdout)
    assert python_entries(trace, "fchmod|pread64|lseek|read", fd) == [], trace
    # the watched descriptor's calls still reach Python
    assert python_entries(trace, "fchmod", plain_fd(res.stdout, "low")), trace
    assert (lower / "f").stat().st_mode & 0o777 == 0o644
