"""cow safety: whatever a view does under `vumount -t vufs -o cow COW LOWER`,
LOWER stays byte for byte (and inode for inode) as it was; the changes live
in COW in VUOS's format and a later session sees them again."""

from __future__ import annotations

import os
import shutil
import stat
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import NOBODY, diff_manifest, make_tmp, manifest, native, write  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir, udir

DOCS = "/usr/share/doc"


def copy_docs(dest: str, want: int = 300) -> list[str]:
    """Copy whole package directories of /usr/share/doc (real files and
    symlinks) until `want` files are copied; return the packages copied."""
    copied, count = [], 0
    for name in sorted(os.listdir(DOCS)):
        src = os.path.join(DOCS, name)
        if os.path.islink(src) or not os.path.isdir(src):
            continue
        files, size, ok = 0, 0, True
        for dirpath, _, filenames in os.walk(src):
            for f in filenames:
                st = os.lstat(os.path.join(dirpath, f))
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    ok = False
                files += 1
                size += st.st_size
        if not ok or files == 0 or size > 2 << 20:
            continue
        shutil.copytree(src, os.path.join(dest, name), symlinks=True)
        copied.append(name)
        count += files
        if count >= want:
            break
    return copied


def make_lower(lower: str) -> dict:
    """The lower tree: made-up files, dirs, symlinks, hard links + docs."""
    for i in range(1, 10):
        write(f"{lower}/f{i}", f"content{i}\n" * i, 0o644)
    write(f"{lower}/dirA/a", "a\n")
    write(f"{lower}/dirA/inner/b", "b\n")
    os.symlink("../f1", f"{lower}/dirA/up")
    write(f"{lower}/tree/x/y/z", "z\n")
    write(f"{lower}/tree/x/w", "w\n")
    os.symlink("x/y", f"{lower}/tree/ylink")
    os.link(f"{lower}/f9", f"{lower}/f9.hard")
    os.symlink("f1", f"{lower}/sym1")
    os.symlink("/nonexistent", f"{lower}/dangling")
    write(f"{lower}/ro", "read only\n", 0o444)
    os.makedirs(f"{lower}/docs")
    pkgs = copy_docs(f"{lower}/docs")
    assert len(pkgs) >= 3, "not enough of /usr/share/doc to copy"
    # a package directory with a subdirectory, to delete with rm -rf
    gone = next((p for p in pkgs if any(os.path.isdir(os.path.join(lower, "docs", p, e))
                                        for e in os.listdir(os.path.join(lower, "docs", p)))),
                pkgs[0])
    edit = next(p for p in pkgs if p != gone)
    edit_file = next(os.path.join(dp, f) for dp, _, fs in
                     sorted(os.walk(os.path.join(lower, "docs", edit))) for f in sorted(fs)
                     if os.path.isfile(os.path.join(dp, f)) and
                     not os.path.islink(os.path.join(dp, f)))
    return {"gone": gone, "edit": os.path.relpath(edit_file, lower)}


#: the changes, run in LOWER (the mount point); $EDIT/$GONE from make_lower
CHANGES = """\
    echo W > f1
    echo A >> f2
    truncate -s 3 f3
    : > f4
    mv f5 f5.renamed
    mv dirA dirA.renamed
    chmod 600 f6
    chmod 700 tree/x
    eval "$CHOWN_F7"
    rm f8
    rm -rf docs/$GONE
    rm -rf tree/x/y
    mkdir newdir newdir/sub
    echo n > newdir/sub/n
    ln -s f1 newlink
    ln -s newdir/sub newdirlink
    ln f2 newhard
    echo X >> "$EDIT"
    chmod 777 ro
    echo more >> f9.hard
    mkdir dirA; echo again > dirA/again
    """

#: a listing of the whole view (every entry and every file's content), made
#: by one process (no children: see test_fork_exec_loop_in_cow_cwd)
VIEW = """\
    python3 - <<'EOF'
    import hashlib, os, stat
    for top, dirs, files in os.walk("."):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            st = os.lstat(path)
            extra = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    extra = hashlib.md5(f.read()).hexdigest()
            print(path, oct(st.st_mode), st.st_uid, st.st_gid, st.st_size, extra)
    EOF
    """

CHECKS = """\
    echo "== f1"; cat f1
    echo "== f2"; cat f2
    echo "== f3"; cat f3; echo
    echo "== f4"; stat -c %s f4
    echo "== renamed"; cat f5.renamed; ls f5
    echo "== dir renamed"; find dirA.renamed | sort; cat dirA.renamed/inner/b dirA.renamed/up
    echo "== modes"; stat -c '%n %a' f6 tree/x ro
    echo "== owner"; stat -c '%n %u %g' f7 f1
    echo "== deleted"; ls f8 docs/$GONE tree/x/y tree/ylink/z; ls -a tree/x
    echo "== listing"; ls
    echo "== docs"; ls docs | grep -cx "$GONE"
    echo "== new"; cat newdir/sub/n newdirlink/n; readlink newlink newdirlink; cat newlink
    echo "== hard"; stat -c '%n %h' f2 newhard; cat newhard
    echo "== edit"; tail -c 2 "$EDIT"
    echo "== dirA"; ls -a dirA; cat dirA/again
    echo "== f9"; cat f9; cat f9.hard
    """


@pytest.fixture
def cow_tree(request):
    """$T/lower (root-owned, with docs) and an empty $T/cow owned by the
    user of the test."""
    top = make_tmp("vufs-cow-")
    lower = os.path.join(top, "lower")
    os.mkdir(lower)
    info = make_lower(lower)
    cow = os.path.join(top, "cow")
    os.mkdir(cow)
    yield top, lower, cow, info
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_cow_changes_stay_in_cow(vu, request, cow_tree, who):
    top, lower, cow, info = cow_tree
    user = None
    chown = "chown 1:2 f7"
    if who == "nobody":
        request.getfixturevalue("unprivileged")
        os.chown(cow, NOBODY, NOBODY)
        user = NOBODY
        # unrealuidgid makes the shell root in the view only: the chown can
        # only be recorded in the cow dir's metadata
        chown = "vusu -c 'chown 1:2 f7'"
    before = manifest(lower)
    env = {"T": top, "GONE": info["gone"], "EDIT": info["edit"], "CHOWN_F7": chown}
    mount = """\
        vu_insmod vufs unrealuidgid
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower || echo CD-FAILED
        """
    first = vu(mount + CHANGES + CHECKS + 'echo "== VIEW"\n' + VIEW, user=user, env=env)
    assert "FAILED" not in first.out, first
    s = first.sections()
    assert s["f1"] == "W", first
    assert s["f2"] == "content2\ncontent2\nA", first
    assert s["f3"] == "con", first
    assert s["f4"] == "0", first
    assert s["renamed"] == "content5\n" * 4 + "content5", first
    assert "ls: cannot access 'f5': No such file or directory" in first.err, first
    assert s["dir renamed"] == ("dirA.renamed\ndirA.renamed/a\ndirA.renamed/inner\n"
                                "dirA.renamed/inner/b\ndirA.renamed/up\nb\nW"), first
    assert s["modes"] == "f6 600\ntree/x 700\nro 777", first
    assert s["owner"] == "f7 1 2\nf1 0 0", first
    assert s["deleted"] == ".\n..\nw", first
    for name in ("f8", f"docs/{info['gone']}", "tree/x/y", "tree/ylink/z"):
        assert f"ls: cannot access '{name}': No such file or directory" in first.err, \
            (name, first)
    listing = s["listing"].split("\n")
    assert "f8" not in listing and "f5" not in listing and "f5.renamed" in listing, first
    assert "dirA" in listing and "dirA.renamed" in listing, first
    assert s["docs"] == "0", first
    assert s["new"] == "n\nn\nf1\nnewdir/sub\nW", first
    assert s["hard"] == "f2 2\nnewhard 2\ncontent2\ncontent2\nA", first
    assert s["edit"] == "X", first
    assert s["dirA"] == ".\n..\nagain\nagain", first
    # f9 and f9.hard were one inode in LOWER: VUOS copies each name up on
    # its own, so only f9.hard shows the appended line
    assert s["f9"] == "content9\n" * 18 + "more", first

    # LOWER is exactly as it was: content, mode, owner, mtime, inode, links
    assert diff_manifest(before, manifest(lower)) == [], first

    # VUOS's on-disk format in the cow dir
    for rel in ("f8", "f5", f"docs/{info['gone']}", "tree/x/y"):
        wo = os.path.join(cow, ".-", rel)
        assert os.path.isfile(wo) and os.path.getsize(wo) == 0, \
            f"no whiteout {wo}: {sorted(os.listdir(os.path.join(cow, '.-')))}"
    with open(f"{cow}/f1") as f:
        assert f.read() == "W\n"
    assert os.path.isfile(f"{cow}/newdir/sub/n")
    assert os.readlink(f"{cow}/newlink") == "f1"
    if user is not None:
        meta = f"{cow}/.-/f7\x7f"
        with open(meta) as f:
            lines = f.read().split("\n")
        assert "uid=1" in lines and "gid=2" in lines, lines
        assert os.stat(f"{cow}/f7").st_uid == NOBODY
    else:
        assert (os.stat(f"{cow}/f7").st_uid, os.stat(f"{cow}/f7").st_gid) == (1, 2)

    # a second session with the same cow dir sees the same tree
    second = vu(mount + CHECKS + 'echo "== VIEW"\n' + VIEW, user=user, env=env)
    assert "FAILED" not in second.out, second
    assert second.sections() == s, second
    assert diff_manifest(before, manifest(lower)) == [], second


def test_whiteout_of_lower_only_file(vu, cow_tree):
    top, lower, cow, _ = cow_tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower
        rm $T/lower/f1 $T/lower/dirA/a; echo "rm=$?"
        rm $T/lower/f1; echo "again=$?"
        ls $T/lower/dirA
        rmdir $T/lower/dirA/inner; echo "rmdir=$?"
        rm $T/lower/dirA/inner/b; rmdir $T/lower/dirA/inner; echo "rmdir2=$?"
        ls -a $T/lower/dirA
        """, env={"T": top})
    assert res.lines == ["rm=0", "again=1", "inner", "up", "rmdir=1", "rmdir2=0",
                         ".", "..", "up"], res
    assert "rm: cannot remove '" + lower + "/f1': No such file or directory" in res.err
    assert "Directory not empty" in res.err, res
    for rel in ("f1", "dirA/a", "dirA/inner"):
        path = f"{cow}/.-/{rel}"
        assert os.path.isfile(path) and os.path.getsize(path) == 0, rel
    assert sorted(os.listdir(cow)) == [".-"], "a whiteout needs no copy"
    assert os.path.isfile(f"{lower}/f1") and os.path.isdir(f"{lower}/dirA/inner")


def test_recreate_after_rm_rf_starts_empty(vu, cow_tree):
    """A directory deleted with rm -r and made again must not show the old
    children of LOWER again (no resurrection)."""
    top, lower, cow, _ = cow_tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower
        cd $T/lower
        rm -rf tree; mkdir tree; echo "== new"; ls -a tree
        touch tree/n; rm -rf dirA; mkdir dirA; echo "== again"; ls -a dirA tree
        """, env={"T": top})
    s = res.sections()
    assert s["new"] == ".\n..", res
    assert s["again"] == "dirA:\n.\n..\n\ntree:\n.\n..\nn", res
    assert os.path.isfile(f"{lower}/tree/x/w")


def test_cow_fd_metadata_calls_do_not_touch_lower(vu, cow_tree):
    """fchmod/fchown/futimens on a descriptor opened read-only on a LOWER
    file must be copied up like chmod/chown/utimensat by path are; they
    must never change LOWER."""
    top, lower, cow, _ = cow_tree
    before = manifest(lower)
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower
        cd $T/lower
        python3 - <<'EOF'
        import os
        for name, call in (("f1", lambda fd: os.fchmod(fd, 0o600)),
                           ("f2", lambda fd: os.fchown(fd, 3, 4)),
                           ("f3", lambda fd: os.utime(fd, (0, 0))),
                           ("dirA", lambda fd: os.fchmod(fd, 0o700))):
            fd = os.open(name, os.O_RDONLY)
            try:
                call(fd)
                print(name, "ok")
            except OSError as exc:
                print(name, exc.strerror)
            os.close(fd)
        EOF
        stat -c '%n %a %u %g %Y' f1 f2 f3 dirA
        """, env={"T": top})
    assert diff_manifest(before, manifest(lower)) == [], res
    lines = res.lines
    assert lines[:4] == ["f1 ok", "f2 ok", "f3 ok", "dirA ok"], res
    assert lines[4].split()[:2] == ["f1", "600"], res
    assert lines[5].split()[:4] == ["f2", "644", "3", "4"], res
    assert lines[6].split() [-1] == "0", res
    assert lines[7].split()[:2] == ["dirA", "700"], res


@pytest.fixture
def nobody_cow(request, cow_tree):
    request.getfixturevalue("unprivileged")
    top, lower, cow, info = cow_tree
    os.chown(cow, NOBODY, NOBODY)
    return cow_tree


def test_cow_virtual_owner_shared_by_hard_links(vu, nobody_cow):
    """As 65534 with unrealuidgid, a chown is only recorded in .-; a hard
    link made afterwards is the same inode and must show the same owner (in
    VUOS the metadata file is hard-linked with the file)."""
    top = nobody_cow[0]
    res = vu("""\
        vu_insmod vufs unrealuidgid
        vumount -t vufs -o cow $T/cow $T/lower
        cd $T/lower
        vusu -c 'chown 7:8 f1 && ln f1 f1.link'
        stat -c '%n %u %g %h %i' f1 f1.link | awk '{print $1, $2, $3, $4}'
        """, user=NOBODY, env={"T": top})
    assert res.lines == ["f1 7 8 2", "f1.link 7 8 2"], res


def test_cow_virtual_owner_seen_by_fstat(vu, nobody_cow):
    """stat and fstat of the same file must agree on the recorded owner."""
    top = nobody_cow[0]
    res = vu("""\
        vu_insmod vufs unrealuidgid
        vumount -t vufs -o cow $T/cow $T/lower
        cd $T/lower
        vusu -c 'chown 7:8 f1'
        stat -c '%u %g' f1
        python3 -c 'import os; st = os.fstat(os.open("f1", os.O_RDONLY)); print(st.st_uid, st.st_gid)'
        """, user=NOBODY, env={"T": top})
    assert res.lines == ["7 8", "7 8"], res


#: a symlink the view plants in COW (through the mount, as any file), then
#: the call that makes the hypervisor write its own bookkeeping file there
PLANTED = {
    # the copy-up writes NAME.vufs-copy next to the copy, then renames it
    "copy-up-temp": ("ln -s $T/lower/f2 f1.vufs-copy", "cow",
                     "echo appended >> f1; tail -n 1 f1"),
    # the metadata file .-/NAME\x7f is written as .-/NAME\x7f.tmp first
    # (nochcopy: chmod only writes metadata)
    "metadata-temp": ("ln -s $T/lower/f2 \".-/f1$(printf '\\177').tmp\"", "cow,nochcopy",
                      "chmod 600 f1; stat -c %a f1"),
    # a whiteout .-/DIR/NAME is written below a .-/DIR the view made a symlink
    "whiteout-dir": ("ln -s $T/lower/tree .-/dirA", "cow",
                     "rm dirA/a; ls dirA | wc -l"),
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_bookkeeping_does_not_follow_planted_symlinks(vu, cow_tree, case):
    """vufs writes its temporary copies, metadata and whiteouts in COW,
    where the view can create files too (in VUOS COW/.- is even reachable
    through the mount by its explicit name). The hypervisor must not follow
    a symlink planted there: LOWER must stay unchanged."""
    top, lower, cow, _ = cow_tree
    plant, opts, action = PLANTED[case]
    before = manifest(lower)
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs -o {opts} $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        {plant} || echo "PLANT-REFUSED"
        {action}
        """, env={"T": top})
    assert "MOUNT-FAILED" not in res.out, res
    # hiding COW/.- from the view (planting refused) is a fine answer too;
    # what must hold is that LOWER is untouched
    assert diff_manifest(before, manifest(lower)) == [], res


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_copy_up_keeps_parent_directory_attributes(vu, request, who):
    """When a change below a LOWER-only directory makes vufs create that
    directory in COW, the view must still show LOWER's mode (setgid/sticky
    and group-write included) and owner: VUOS copies them to the new
    directory, or records them in .- when it cannot."""
    top = make_tmp("vufs-cow-dirs-")
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    user = None
    if who == "nobody":
        request.getfixturevalue("unprivileged")
        user = NOBODY
    lower = f"{top}/lower"
    modes = {"d775": 0o775, "d1777": 0o1777, "d2775": 0o2775, "owned": 0o755,
             "deep": 0o750}
    for name, mode in modes.items():
        os.makedirs(f"{lower}/{name}")
        os.chmod(f"{lower}/{name}", mode)
    os.makedirs(f"{lower}/deep/er")
    write(f"{lower}/deep/er/f", "f\n", 0o666)
    os.chown(f"{lower}/owned", 1234, 1235)
    os.chmod(f"{lower}/deep", 0o755 if user else 0o750)
    os.mkdir(f"{top}/cow")
    if user:
        os.chown(f"{top}/cow", NOBODY, NOBODY)
        for name in ("d775", "d2775", "owned"):
            os.chmod(f"{lower}/{name}", modes[name] | 0o007)
    before = {name: os.stat(f"{lower}/{name}") for name in modes}
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        for d in d775 d1777 d2775 owned; do echo new > $d/new || echo "FAILED $d"; done
        echo more >> deep/er/f || echo "FAILED deep"
        stat -c '%n %a %u %g' d775 d1777 d2775 owned deep deep/er
        """, user=user, env={"T": top})
    assert "FAILED" not in res.out, res
    want = [f"{name} {before[name].st_mode & 0o7777:o} {before[name].st_uid} "
            f"{before[name].st_gid}" for name in ("d775", "d1777", "d2775", "owned", "deep")]
    er = os.stat(f"{lower}/deep/er")
    want.append(f"deep/er {er.st_mode & 0o7777:o} {er.st_uid} {er.st_gid}")
    assert res.lines == want, res


def test_rename_of_lower_directory_keeps_attributes(vu, tdir):
    """mv of a LOWER-only tree copies it into COW: modes (setgid, sticky,
    world-writable), owners and symlinks must come out as they were."""
    lower = f"{tdir}/lower"
    write(f"{lower}/t/sub/f", "f\n", 0o600)
    os.symlink("sub/f", f"{lower}/t/l")
    os.lchown(f"{lower}/t/l", 1234, 1236)
    os.chown(f"{lower}/t/sub/f", 1234, 1235)
    os.chown(f"{lower}/t/sub", 1234, 1235)
    os.chmod(f"{lower}/t/sub", 0o1777)
    os.chmod(f"{lower}/t", 0o2770)
    os.mkdir(f"{tdir}/cow")
    host = native(f"cd {lower}; find t -printf '%p %m %U %G %y %l\\n' | sort")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        mv t t2 || echo MV-FAILED
        find t2 -printf '%p %m %U %G %y %l\\n' | sort
        """, env={"T": tdir})
    assert res.lines == [line.replace("t", "t2", 1) for line in host.lines], res


def test_virtual_device_node_as_unprivileged_user(vu, udir):
    """mknod of a device by 65534 in a cow view: VUOS makes a plain file and
    records type and rdev in .-; the view shows a device with the mode the
    kernel would give (mode & ~umask)."""
    T = udir
    for d in ("lower", "cow"):
        os.mkdir(f"{T}/{d}")
        os.chown(f"{T}/{d}", NOBODY, NOBODY)
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        umask 022; mknod null c 1 3; echo "rc=$?"
        umask 077; mknod disk b 8 1; echo "rc=$?"
        stat -c '%n|%F|%t,%T|%a' null disk
        """, user=NOBODY, env={"T": T})
    assert res.lines == ["rc=0", "rc=0", "null|character special file|1,3|644",
                         "disk|block special file|8,1|600"], res
    with open(f"{T}/cow/.-/null\x7f") as f:
        meta = f.read().split("\n")
    assert "type=c" in meta and "rdev=1,3" in meta, meta
    assert os.listdir(f"{T}/lower") == []


def test_unix_socket_bound_in_cow_view_stays_in_cow(vu, tdir):
    """bind(2) of an AF_UNIX socket names a file like creat(2) does: in a cow
    view it must not create anything in LOWER, and the view must see (and
    connect to) the socket under the name it was bound to."""
    lower = f"{tdir}/lower"
    write(f"{lower}/f", "f\n")
    os.mkdir(f"{tdir}/cow")
    before = manifest(lower)
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        python3 - <<'EOF'
        import os, socket
        path = os.environ["T"] + "/lower/sock"
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(1)
        cli = socket.socket(socket.AF_UNIX)
        cli.connect(path)
        conn, _ = srv.accept()
        cli.sendall(b"hello")
        print(conn.recv(5).decode())
        print(sorted(os.listdir(os.environ["T"] + "/lower")))
        EOF
        stat -c %F $T/lower/sock
        """, env={"T": tdir})
    assert res.lines == ["hello", "['f', 'sock']", "socket"], res
    assert diff_manifest(before, manifest(lower)) == [], res


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root session")
def test_cow_checks_the_callers_permissions(vu, cow_tree):
    """In a session started by root, a process that dropped to 65534 shares
    the cow view. It may not create nor write in root's 0755 directories
    (the kernel says EACCES), and it must not be able to delete or rename
    root's entries there either: vufs must not do those with the
    hypervisor's own (root) credentials."""
    top, lower, cow, _ = cow_tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        setpriv --reuid 65534 --regid 65534 --clear-groups bash -c '
            mkdir newd; echo "mkdir=$?"
            echo x >> f1; echo "write=$?"
            rm -f f2; echo "rm=$?"
            mv f3 f3.moved; echo "mv=$?"
            rm -rf dirA; echo "rmrf=$?"'
        ls f2 f3 dirA/a > /dev/null; echo "still=$?"
        """, env={"T": top})
    assert res.lines == ["mkdir=1", "write=1", "rm=1", "mv=1", "rmrf=1", "still=0"], res
    assert not os.path.exists(f"{cow}/.-/f2"), res


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a session started by root, "
                    "to drop its rights in one of its processes (CI runs as root)")
def test_cow_checks_permissions_after_dropping_them_in_process(vu, cow_tree):
    """A root session remembers whose rights a process has between calls:
    a process that worked as root in the cow view, then dropped to 65534
    without an exec, is checked as 65534 from its very next call."""
    top, lower, cow, _ = cow_tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        python3 -c '
import os
os.stat("f2"); open("f1").read()           # as root, through the view
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
for what, do in (("rm", lambda: os.unlink("f2")), ("write", lambda: open("f1", "a")),
                 ("mkdir", lambda: os.mkdir("newd"))):
    try:
        do()
        print(what, "allowed")
    except PermissionError:
        print(what, "denied")
'
        ls f2 > /dev/null; echo "still=$?"
        """, env={"T": top})
    assert res.lines == ["rm denied", "write denied", "mkdir denied", "still=0"], res
    assert not os.path.exists(f"{cow}/.-/f2"), res


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root session")
def test_cow_chown_by_unprivileged_process_cannot_steal_a_file(vu, cow_tree):
    """A process that dropped to 65534 in a root session must not gain
    access to root's 0600 file by chown-ing it in a cow view: chown of a
    file one does not own is EPERM, and the content stays unreadable."""
    top, lower, cow, _ = cow_tree
    write(f"{lower}/secret", "top secret\n", 0o600)
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        setpriv --reuid 65534 --regid 65534 --clear-groups bash -c '
            cat secret; echo "read=$?"
            chown 65534:65534 secret; echo "chown=$?"
            chmod 644 secret; echo "chmod=$?"
            cat secret; echo "read=$?"'
        stat -c '%U %a' secret
        """, env={"T": top})
    assert res.lines == ["read=1", "chown=1", "chmod=1", "read=1", "root 600"], res
    assert "top secret" not in res.out
