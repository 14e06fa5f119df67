"""Tests for umvu.tracefmt: memory comes from a plain bytes buffer."""

import logging
import os
import struct
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from umvu.tracefmt import format_call, format_line, syscall_name  # noqa: E402

MASK64 = (1 << 64) - 1
AT_FDCWD = -100 & MASK64
O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_CLOEXEC = 0, 1, 0o100, 0o1000, 0o2000000
BAD = 0xDEAD0000


class Memory:
    """A fake address space: one bytes buffer mapped at BASE."""

    BASE = 0x10000

    def __init__(self, size=8192):
        self.buf = bytearray(size)
        self.next = 0
        self.reads = []

    def put(self, data):
        off = self.next
        self.buf[off:off + len(data)] = data
        self.next = (off + len(data) + 15) & ~15
        return self.BASE + off

    def cstr(self, text):
        return self.put(text.encode() + b"\0")

    def __call__(self, addr, size):
        self.reads.append((addr, size))
        off = addr - self.BASE
        if off < 0 or off + size > len(self.buf) + 4096 or off >= len(self.buf):
            raise OSError(14, "Bad address")
        return bytes(self.buf[off:off + size])


@pytest.fixture
def mem():
    return Memory()


# -- names -----------------------------------------------------------------

def test_syscall_names():
    assert syscall_name(0) == "read"
    assert syscall_name(257) == "openat"
    assert syscall_name(59) == "execve"
    assert syscall_name(283) == "timerfd_create"
    assert syscall_name(439) == "faccessat2"
    assert syscall_name(452) == "fchmodat2"
    assert syscall_name(-1) == "vu_insmod"
    assert syscall_name(-2) == "vu_rmmod"
    assert syscall_name(-3) == "vu_lsmod"
    assert syscall_name(-4) == "vuctl"
    assert syscall_name(-5) == "msocket"
    assert syscall_name(-6) == "syscall_-6"
    assert syscall_name(520) == "syscall_520"       # x32-only number
    assert syscall_name(100000) == "syscall_100000"


# -- openat ----------------------------------------------------------------

def test_openat_string_and_flags(mem):
    path = mem.cstr("/etc/passwd")
    args = (AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0, 0, 0)
    assert format_call(257, args, mem) == \
        'openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC)'
    assert format_line(1234, 257, args, mem, 3, "kernel") == \
        '[1234] openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3 <kernel>'


def test_openat_32bit_dirfd_and_mode(mem):
    path = mem.cstr("/tmp/x")
    args = (0xFFFFFF9C, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644, 0, 0)
    assert format_call(257, args, mem) == \
        'openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0644)'


def test_openat_real_fd(mem):
    path = mem.cstr("sub")
    assert format_call(257, (7, path, 0o200000, 0), mem) == \
        'openat(7, "sub", O_RDONLY|O_DIRECTORY)'


def test_failing_result_errno_name(mem):
    path = mem.cstr("/nonexistent")
    line = format_line(42, 257, (AT_FDCWD, path, O_RDONLY, 0), mem, -2, "vufuse")
    assert line == ('[42] openat(AT_FDCWD, "/nonexistent", O_RDONLY) = '
                    '-1 ENOENT (No such file or directory) <vufuse>')


def test_result_variants(mem):
    fd = (3, 0, 0)
    # unsigned 64-bit register value of -EAGAIN
    assert format_line(1, 3, fd, mem, (-11) & MASK64, "kernel") == \
        "[1] close(3) = -1 EAGAIN (Resource temporarily unavailable) <kernel>"
    assert format_line(1, 3, fd, mem, -95, "k").endswith(
        "= -1 EOPNOTSUPP (Operation not supported) <k>")
    assert format_line(1, 3, fd, mem, -512, "k").endswith(
        "= -1 ERESTARTSYS (To be restarted if SA_RESTART is set) <k>")
    assert format_line(1, 3, fd, mem, None, "kernel") == "[1] close(3) = ? <kernel>"
    assert format_line(1, 3, fd, mem, 0, "") == "[1] close(3) = 0"
    assert format_line(1, 3, fd, mem, -4096, "k") == "[1] close(3) = -4096 <k>"
    mmap = (0, 8192, 3, 0x22, MASK64, 0)
    assert format_line(9, 9, mmap, mem, 0x7F0000001000, "kernel") == (
        "[9] mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)"
        " = 0x7f0000001000 <kernel>")


# -- strings -----------------------------------------------------------------

def test_unreadable_pointer_shows_hex(mem):
    assert format_call(257, (AT_FDCWD, BAD, O_RDONLY, 0), mem) == \
        "openat(AT_FDCWD, 0xdead0000, O_RDONLY)"
    assert format_call(-1, (BAD, 0), mem) == "vu_insmod(0xdead0000, 0)"


def test_read_mem_raising_anything_is_contained(mem):
    def broken(addr, size):
        raise ZeroDivisionError("boom")
    assert format_call(2, (0x1000, 0, 0), broken) == "open(0x1000, O_RDONLY)"


def test_unreadable_pointer_does_not_log(mem, caplog):
    caplog.set_level(logging.DEBUG)
    format_call(257, (AT_FDCWD, BAD, O_RDONLY, 0), mem)
    format_call(42, (3, BAD, 16), mem)          # connect(struct sockaddr *)
    assert caplog.records == []


def test_null_string(mem):
    assert format_call(2, (0, 0, 0), mem) == "open(NULL, O_RDONLY)"


def test_string_truncation_like_strace(mem):
    exact = mem.cstr("b" * 32)
    longer = mem.cstr("a" * 33)
    assert format_call(2, (exact, 0, 0), mem) == 'open("%s", O_RDONLY)' % ("b" * 32)
    assert format_call(2, (longer, 0, 0), mem) == 'open("%s"..., O_RDONLY)' % ("a" * 32)


def test_string_escapes(mem):
    data = b'\x7fELF\x02\x01\x011\n"\\\0'
    buf = mem.put(data)
    assert format_call(1, (5, buf, len(data)), mem) == \
        r'write(5, "\177ELF\2\1\0011\n\"\\\0", 12)'


def test_write_buffer_truncated(mem):
    buf = mem.put(b"x" * 100)
    assert format_call(1, (1, buf, 100), mem) == 'write(1, "%s"..., 100)' % ("x" * 32)


def test_cstring_read_stops_at_page_boundary():
    """A string ending just before an unmapped page must still be readable."""
    page = 0x7000
    data = b"end\0"
    start = page + 4096 - len(data)

    def read_mem(addr, size):
        if addr < start or addr + size > page + 4096:
            raise OSError(14, "Bad address")
        return data[addr - start:addr - start + size]

    assert format_call(2, (start, 0, 0), read_mem) == 'open("end", O_RDONLY)'


def test_execve_argv_envp(mem):
    path = mem.cstr("/bin/ls")
    a0, a1 = mem.cstr("ls"), mem.cstr("-l")
    argv = mem.put(struct.pack("<QQQ", a0, a1, 0))
    envp = mem.put(struct.pack("<QQ", a0, 0))
    assert format_call(59, (path, argv, envp), mem) == \
        'execve("/bin/ls", ["ls", "-l"], %s /* 1 var */)' % hex(envp)


def test_misc_syscalls(mem):
    path = mem.cstr("/d")
    assert format_call(263, (AT_FDCWD, path, 0x200), mem) == \
        'unlinkat(AT_FDCWD, "/d", AT_REMOVEDIR)'
    assert format_call(41, (2, 1 | 0o2000000, 0), mem) == \
        "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0)"
    assert format_call(8, (3, (-5) & MASK64, 1), mem) == "lseek(3, -5, SEEK_CUR)"
    assert format_call(165, (path, path, mem.cstr("fuse"), 0, 0), mem) == \
        'mount("/d", "/d", "fuse", 0, NULL)'
    assert format_call(0, (3, 0x7000, 4096), mem) == "read(3, 0x7000, 4096)"


def test_unknown_syscall_is_hex(mem):
    assert format_call(1000, (1, 2, 3), mem) == "syscall_1000(0x1, 0x2, 0x3)"


# -- umvu control calls ------------------------------------------------------

def test_vu_insmod_rmmod_lsmod(mem):
    mod = mem.cstr("vufuse")
    assert format_call(-1, (mod, 1, 0, 0, 0, 0), mem) == 'vu_insmod("vufuse", 1)'
    assert format_call(-2, (mod, 0, 0, 0, 0, 0), mem) == 'vu_rmmod("vufuse")'
    assert format_call(-3, (0x7000, 100, 0, 0, 0, 0), mem) == "vu_lsmod(0x7000, 100)"
    assert format_line(5, -1, (mod, 0), mem, 0, "umvu") == \
        '[5] vu_insmod("vufuse", 0) = 0 <umvu>'
    assert format_line(5, -2, (mod,), mem, -2, "umvu") == \
        '[5] vu_rmmod("vufuse") = -1 ENOENT (No such file or directory) <umvu>'


def test_vuctl(mem):
    name = mem.cstr("myvm")
    tags = mem.cstr("AB")
    assert format_call(-4, (2, name, 0, 0, 0, 0), mem) == 'vuctl(VUCTL_SETNAME, "myvm")'
    assert format_call(-4, (4, tags, 1, 0, 0, 0), mem) == \
        'vuctl(VUCTL_ADD_DEBUGTAGS, "AB", 1)'
    assert format_call(-4, (5, tags, 0, 0, 0, 0), mem) == \
        'vuctl(VUCTL_DEL_DEBUGTAGS, "AB", 0)'
    assert format_call(-4, (7, mem.cstr("G"), 0, 0, 0, 0), mem) == \
        'vuctl(VUCTL_SET_DEBUGCOLOR, "G")'
    assert format_call(-4, (1, 0, 0, 0, 0, 0), mem) == "vuctl(VUCTL_GETINFO, NULL)"
    assert format_call(-4, (3, 0x7000, 64, 1, 0, 0), mem) == \
        "vuctl(VUCTL_GET_DEBUGTAGS, 0x7000, 64, 1)"
    assert format_call(-4, (99, 1, 2), mem) == "vuctl(99, 0x1, 0x2)"


def test_msocket(mem):
    stack = mem.cstr("/dev/net/mystack")
    assert format_call(-5, (stack, 2, 0, 0, 0, 0), mem) == \
        'msocket("/dev/net/mystack", AF_INET, SOCK_DEFAULT, 0)'
    assert format_call(-5, (0, 10, 1 | 0o2000000, 0, 0, 0), mem) == \
        "msocket(NULL, AF_INET6, SOCK_STREAM|SOCK_CLOEXEC, 0)"
    assert format_call(-5, (BAD, 1, 2, 0), mem) == \
        "msocket(0xdead0000, AF_UNIX, SOCK_DGRAM, 0)"


# -- never raises ------------------------------------------------------------

@pytest.mark.parametrize("nr,args", [
    (257, (None, "x")),
    ("x", (1, 2)),
    (2, None),
    (-4, ()),
    (59, (0x7000, BAD, BAD)),
])
def test_never_raises(mem, nr, args):
    assert isinstance(format_call(nr, args, mem), str)
    assert isinstance(format_line(1, nr, args, mem, "junk", None), str)
    assert isinstance(format_line(1, nr, args, mem, -1, "k"), str)


def test_fallback_shape(mem):
    assert format_call(257, (None, 1), mem) == "openat(?, 0x1)"
