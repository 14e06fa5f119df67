"""Unit tests of umvu.vfs.state: the descriptor table (FdTable), the open file
descriptions it shares (OpenFile) and a process's file-system state (ProcFs,
FsState), against the kernel's rules for dup, fork, CLONE_FILES/CLONE_FS,
exec and close_range (no umvu session, no ptrace)."""

from __future__ import annotations

import os

import pytest

from umvu.vfs.state import CLONE_FILES, CLONE_FS, FdTable, FsState, OpenFile, ProcFs


@pytest.fixture
def released():
    """The open files released, in order: the tables of a test are made
    with `released.append` as their on_release (the view gives its own)."""
    seen: list[OpenFile] = []
    return seen


def of(name="f", **kw) -> OpenFile:
    return OpenFile(f"/v/{name}", service=object(), **kw)


def proc(released=None, files=None, cwd="/home") -> ProcFs:
    on_release = released.append if released is not None else None
    return ProcFs(FsState(cwd), files if files is not None
                  else FdTable(on_release=on_release))


# ---- add / get / drop --------------------------------------------------------

def test_add_get_drop(released):
    t = FdTable(on_release=released.append)
    a = of("a")
    assert t.get(3) is None
    t.add(3, a, False)
    assert t.get(3) is a and a.refs == 1
    assert list(t) == [(3, (a, False))]
    t.drop(3)
    assert t.get(3) is None and a.refs == 0
    assert released == [a]
    t.drop(3)                   # closing twice: nothing more
    t.drop(99)
    assert released == [a] and a.refs == 0


def test_add_over_an_open_fd_releases_the_old(released):
    """dup2 onto an open descriptor, or an open reusing a number the view
    missed being closed: the old open file loses that reference."""
    t = FdTable(on_release=released.append)
    a, b = of("a"), of("b")
    t.add(5, a, False)
    t.add(5, b, True)
    assert t.get(5) is b and released == [a]
    assert t.fds[5] == (b, True)


def test_dup_between_sharing_fds_keeps_it(released):
    """dup2(3, 4) when 4 already refers to 3's open file."""
    t = FdTable(on_release=released.append)
    a = of()
    t.add(3, a, False)
    t.dup(3, 4)
    t.dup(3, 4, cloexec=True)
    assert a.refs == 2 and released == [] and t.fds[4] == (a, True)


def test_constructor_counts_references(released):
    a = of()
    t = FdTable({3: (a, False), 4: (a, True)}, released.append)
    assert a.refs == 2 and t.get(4) is a
    t.drop_all()
    assert released == [a]


def test_iteration_is_a_snapshot(released):
    t = FdTable(on_release=released.append)
    for fd in range(3, 8):
        t.add(fd, of(str(fd)), False)
    for fd, _ in t:
        t.drop(fd)                  # no "dict changed size during iteration"
    assert t.fds == {} and len(released) == 5


# ---- dup ---------------------------------------------------------------------

def test_dup_shares_the_open_file(released):
    t = FdTable(on_release=released.append)
    a = of()
    t.add(3, a, True)
    t.dup(3, 10)
    assert t.get(10) is t.get(3) is a and a.refs == 2
    t.get(3).pos = 123                       # one offset for both
    assert t.get(10).pos == 123
    t.get(10).flags |= os.O_APPEND           # and one set of status flags
    assert t.get(3).flags & os.O_APPEND
    # the descriptor flag is the new descriptor's own: cleared by dup/dup2
    assert t.fds[10] == (a, False) and t.fds[3] == (a, True)
    t.dup(3, 11, cloexec=True)               # F_DUPFD_CLOEXEC, dup3(O_CLOEXEC)
    assert t.fds[11] == (a, True) and a.refs == 3
    t.drop(3)
    t.drop(10)
    assert released == [] and a.refs == 1
    t.drop(11)
    assert released == [a]


def test_dup_onto_itself_changes_nothing(released):
    """dup2(fd, fd) returns fd and leaves FD_CLOEXEC alone."""
    t = FdTable(on_release=released.append)
    a = of()
    t.add(3, a, True)
    t.dup(3, 3)
    assert t.fds[3] == (a, True) and a.refs == 1 and released == []


def test_dup_onto_a_mirrored_fd_replaces_it(released):
    t = FdTable(on_release=released.append)
    a, b = of("a"), of("b")
    t.add(3, a, False)
    t.add(4, b, False)
    t.dup(3, 4)
    assert t.get(4) is a and released == [b] and a.refs == 2


def test_dup_of_a_kernel_fd_drops_the_target(released):
    """dup2(kernel_fd, mirrored_fd) succeeded: the target now refers to
    something the kernel opened, no longer mirrored."""
    t = FdTable(on_release=released.append)
    b = of("b")
    t.add(4, b, False)
    t.dup(7, 4)
    assert t.get(4) is None and released == [b]


# ---- CLOEXEC and exec --------------------------------------------------------

def test_set_cloexec(released):
    t = FdTable(on_release=released.append)
    a = of()
    t.add(3, a, False)
    t.set_cloexec(3, True)
    assert t.fds[3] == (a, True)
    t.set_cloexec(3, False)
    assert t.fds[3] == (a, False)
    t.set_cloexec(9, True)                   # not mirrored: nothing to do
    assert 9 not in t.fds and a.refs == 1 and released == []


def test_after_exec_keeps_the_inherited(released):
    t = FdTable(on_release=released.append)
    keep, close = of("keep"), of("close")
    t.add(0, keep, False)
    t.add(3, close, True)
    t.add(4, keep, True)
    new = t.after_exec()
    assert new is not t
    assert new.fds == {0: (keep, False)}
    assert t.get(3) is close                 # the old table is untouched
    assert keep.refs == 3 and close.refs == 1
    t.drop_all()                             # the view drops the old table
    assert released == [close] and keep.refs == 1
    new.drop_all()
    assert released == [close, keep]


def test_procfs_exec_unshares_files_only(released):
    p = proc(released)
    a, c = of("a"), of("c")
    p.files.add(3, a, False)
    p.files.add(4, c, True)
    p.exe = "/bin/old"
    thread = p.fork(CLONE_FS | CLONE_FILES)          # a thread of the process
    after = p.exec()
    assert after.files is not p.files and after.files.fds == {3: (a, False)}
    assert after.fs is p.fs                         # exec keeps fs_struct
    assert after.exe == "/bin/old"                   # the view sets the new one
    assert thread.files is p.files                   # still the old table
    p.files.drop_all()                               # nobody else uses it now
    assert released == [c] and a.refs == 1


# ---- close_range ---------------------------------------------------------------

def test_drop_range_is_inclusive(released):
    t = FdTable(on_release=released.append)
    files = {fd: of(str(fd)) for fd in (0, 2, 3, 4, 5, 9)}
    for fd, f in files.items():
        t.add(fd, f, False)
    t.drop_range(3, 5)
    assert sorted(t.fds) == [0, 2, 9]
    assert released == [files[3], files[4], files[5]]
    t.drop_range(9, 0xffffffff)                     # close_range(9, ~0U)
    assert sorted(t.fds) == [0, 2]
    t.drop_range(5, 3)                              # first > last: nothing
    assert sorted(t.fds) == [0, 2]


def test_drop_range_releases_only_the_last_reference(released):
    t = FdTable(on_release=released.append)
    a = of()
    t.add(3, a, False)
    t.dup(3, 20)
    t.drop_range(0, 10)
    assert released == [] and t.get(20) is a and a.refs == 1


def test_drop_all(released):
    t = FdTable(on_release=released.append)
    a = of()
    t.add(0, a, False)
    t.add((1 << 31) - 1, of("top"), False)          # the highest descriptor
    t.drop_all()
    assert t.fds == {} and len(released) == 2


def test_close_range_unshare(released):
    """CLOSE_RANGE_UNSHARE: the view copies the table, then drops the range
    from the copy; the other users keep their descriptors."""
    p = proc(released)
    a = of()
    p.files.add(3, a, False)
    thread = p.fork(CLONE_FS | CLONE_FILES)
    p.files = p.files.copy()
    p.files.drop_range(0, 10)
    assert thread.files.get(3) is a and a.refs == 1 and released == []


# ---- fork, threads -----------------------------------------------------------------

def test_fork_copies_the_table(released):
    parent = proc(released)
    a = of()
    parent.files.add(3, a, True)
    child = parent.fork(0)
    assert child.files is not parent.files
    assert child.files.fds == {3: (a, True)}        # FD_CLOEXEC is inherited
    assert child.files.get(3) is a and a.refs == 2  # one open file description
    child.files.get(3).pos = 7
    assert parent.files.get(3).pos == 7             # offsets are shared
    child.files.drop(3)                             # close in the child only
    assert parent.files.get(3) is a and released == []
    b = of("b")
    child.files.add(3, b, False)                    # reuse in the child
    assert parent.files.get(3) is a
    parent.files.drop(3)
    assert released == [a]


def test_clone_files_shares_the_table(released):
    parent = proc(released)
    a = of()
    parent.files.add(3, a, False)
    thread = parent.fork(CLONE_FILES)
    assert thread.files is parent.files and a.refs == 1
    thread.files.add(4, of("new"), False)           # seen by both
    assert parent.files.get(4) is not None
    parent.files.drop(3)                            # closed for both
    assert thread.files.get(3) is None and released == [a]


def test_clone_fs_shares_cwd_and_root():
    parent = proc(cwd="/a")
    shared = parent.fork(CLONE_FS)
    copied = parent.fork(0)
    assert shared.fs is parent.fs and copied.fs is not parent.fs
    shared.fs.cwd = "/b"
    shared.fs.root = "/jail"
    assert parent.fs == FsState("/b", "/jail")
    assert copied.fs == FsState("/a", "/")
    copied.fs.cwd = "/c"
    assert parent.fs.cwd == "/b"


def test_fork_keeps_exe():
    p = proc()
    p.exe = "/usr/bin/x"
    assert p.fork(0).exe == "/usr/bin/x"
    assert p.fork(CLONE_FILES | CLONE_FS).exe == "/usr/bin/x"


def test_many_tables_one_release(released):
    """A description shared by several tables is released once, by whichever
    table drops the last descriptor."""
    a = of()
    p = proc(released)
    p.files.add(3, a, False)
    tables = [p.fork(0).files for _ in range(3)] + [p.files]
    for t in tables[1:]:
        t.dup(3, 8)
    assert a.refs == 7
    for t in tables[:-1]:
        t.drop_all()
    assert released == [] and a.refs == 2
    tables[-1].drop(3)
    assert released == []
    tables[-1].drop(8)
    assert released == [a] and a.refs == 0


# ---- from_kernel -------------------------------------------------------------

def test_from_kernel():
    p = ProcFs.from_kernel(os.getpid())
    assert p.fs == FsState(os.getcwd(), "/")
    assert p.files.fds == {} and p.exe is None


def test_from_kernel_gone_process():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)                 # reaped: /proc/PID is gone
    assert ProcFs.from_kernel(pid).fs.cwd == "/"
