"""vufs modes and options: bind, merge, mincow, except=, nochcopy, ro."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import NOBODY, diff_manifest, manifest, write  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir, udir


@pytest.fixture
def layers(tdir):
    """$T/src and $T/tgt with a name in both, one in each, and subdirs."""
    write(f"{tdir}/src/both", "src-both\n")
    write(f"{tdir}/src/s", "S\n")
    write(f"{tdir}/src/sub/f", "src-sub\n")
    write(f"{tdir}/tgt/both", "tgt-both\n")
    write(f"{tdir}/tgt/t", "T\n")
    write(f"{tdir}/tgt/sub/f", "tgt-sub\n")
    write(f"{tdir}/tgt/sub/g", "tgt-g\n")
    return tdir


def test_bind_replaces_target(vu, layers):
    T = layers
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED
        echo "== ls"; ls $T/tgt $T/tgt/sub
        echo "== both"; cat $T/tgt/both
        echo "== t"; cat $T/tgt/t; echo "rc=$?"
        echo new > $T/tgt/new; mkdir $T/tgt/d; echo x >> $T/tgt/s
        echo "== src"; ls $T/src; cat $T/src/new $T/src/s
        """, env={"T": T})
    s = res.sections()
    assert s["ls"] == f"{T}/tgt:\nboth\ns\nsub\n\n{T}/tgt/sub:\nf", res
    assert s["both"] == "src-both", res
    assert s["t"] == "rc=1", res
    assert s["src"] == "both\nd\nnew\ns\nsub\nnew\nS\nx", res
    assert sorted(os.listdir(f"{T}/tgt")) == ["both", "sub", "t"]
    assert not os.path.exists(f"{T}/src/.-"), "bind mode keeps no metadata"


def test_merge_source_is_read_only(vu, layers):
    T = layers
    before = manifest(f"{T}/src")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o merge $T/src $T/tgt || echo MOUNT-FAILED
        cd $T/tgt
        echo "== ls"; ls -a . sub
        echo "== read"; cat both s t sub/f sub/g
        echo "== write"; echo x > s; echo "rc=$?"; echo x >> both; echo "rc=$?"
        echo "== others"; rm s; echo "rm=$?"; chmod 600 s; echo "chmod=$?"
        mv s s2; echo "mv=$?"; truncate -s 0 sub/f; echo "truncate=$?"
        touch both; echo "touch=$?"
        """, env={"T": T})
    s = res.sections()
    assert s["ls"] == ".:\n.\n..\nboth\ns\nsub\nt\n\nsub:\n.\n..\nf\ng", res
    assert s["read"] == "src-both\nS\nT\nsrc-sub\ntgt-g", res
    assert s["write"] == "rc=1\nrc=1", res
    assert s["others"] == "rm=1\nchmod=1\nmv=1\ntruncate=1\ntouch=1", res
    assert res.err.count("Read-only file system") == 7, res
    assert "bash: line 6: s: Read-only file system" in res.err, res
    assert diff_manifest(before, manifest(f"{T}/src")) == [], res


def test_merge_new_files_go_to_target(vu, layers):
    """Anything that is not in SOURCE is done on TARGET: new files, new
    directories, deletions of TARGET's own files."""
    T = layers
    before = manifest(f"{T}/src")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o merge $T/src $T/tgt || echo MOUNT-FAILED
        cd $T/tgt
        echo created > newfile; echo "create=$?"
        mkdir newdir; echo "mkdir=$?"
        echo inner > sub/newinner; echo "inner=$?"
        echo x >> t; rm sub/g; echo "rm=$?"
        ln -s t tlink; echo "symlink=$?"
        mv t t2; echo "mv=$?"
        echo "== ls"; ls
        """, env={"T": T})
    assert "create=0\nmkdir=0\ninner=0\nrm=0\nsymlink=0\nmv=0\n" in res.out, res
    assert sorted(os.listdir(f"{T}/tgt")) == ["both", "newdir", "newfile", "sub",
                                               "t2", "tlink"], res
    assert sorted(os.listdir(f"{T}/tgt/sub")) == ["f", "newinner"], res
    with open(f"{T}/tgt/t2") as f:
        assert f.read() == "T\nx\n"
    assert diff_manifest(before, manifest(f"{T}/src")) == [], res


def test_merge_hard_link_is_no_writable_alias_of_source(vu, layers):
    """A link made in the view must not give a writable name to a SOURCE
    file: after `ln s s2; echo Z > s2`, SOURCE's s is unchanged."""
    T = layers
    before = manifest(f"{T}/src")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o merge $T/src $T/tgt || echo MOUNT-FAILED
        cd $T/tgt
        ln s s2; echo "ln=$?"
        echo Z > s2; echo "write=$?"
        cat s
        """, env={"T": T})
    assert diff_manifest(before, manifest(f"{T}/src")) == [], res
    assert res.lines[-1] == "S", res


@pytest.fixture
def mincow_tree(request, tdir):
    """$T/lower writable by 65534 (own file + a root-owned one + a
    root-owned subdir), $T/cow owned by 65534."""
    request.getfixturevalue("unprivileged")
    T = tdir
    write(f"{T}/lower/userf", "U\n")
    write(f"{T}/lower/rootf", "R\n", 0o644)
    write(f"{T}/lower/rodir/inside", "I\n")
    os.chown(f"{T}/lower", NOBODY, NOBODY)
    os.chown(f"{T}/lower/userf", NOBODY, NOBODY)
    os.makedirs(f"{T}/cow")
    os.chown(f"{T}/cow", NOBODY, NOBODY)
    return T


def test_mincow_modifies_in_place_only_when_allowed(vu, mincow_tree):
    T = mincow_tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o mincow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        echo U2 >> userf; echo R2 >> rootf; echo I2 >> rodir/inside
        echo "== view"; cat userf rootf rodir/inside
        rm rodir/inside; echo "rm=$?"; ls -a rodir
        """, user=NOBODY, env={"T": T})
    assert res.out.startswith("== view\nU\nU2\nR\nR2\nI\nI2\nrm=0\n.\n..\n"), res
    with open(f"{T}/lower/userf") as f:
        assert f.read() == "U\nU2\n", "a writable lower file is modified in place"
    with open(f"{T}/lower/rootf") as f:
        assert f.read() == "R\n"
    with open(f"{T}/cow/rootf") as f:
        assert f.read() == "R\nR2\n"
    assert not os.path.exists(f"{T}/cow/userf")
    assert os.path.isfile(f"{T}/lower/rodir/inside")
    assert os.path.isfile(f"{T}/cow/.-/rodir/inside")


def test_mincow_creates_in_target_when_allowed(vu, mincow_tree):
    """VUOS mincow tries a creation in TARGET first: in a directory the
    user may write, new files and directories are made there."""
    T = mincow_tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o mincow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        mkdir newdir; echo created > newfile; ln -s userf newlink
        echo inroot > rodir/new; echo "rc=$?"
        ls
        """, user=NOBODY, env={"T": T})
    assert "rc=0" in res.out, res
    assert sorted(os.listdir(f"{T}/lower")) == ["newdir", "newfile", "newlink",
                                                 "rodir", "rootf", "userf"], res
    assert os.path.isfile(f"{T}/cow/rodir/new"), "rodir is not writable: in COW"


def test_except_shows_the_original(vu, layers):
    T = layers
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o except=/sub $T/src $T/tgt || echo MOUNT-FAILED
        echo "== sub"; ls $T/tgt/sub; cat $T/tgt/sub/f
        echo "== other"; cat $T/tgt/both
        echo "== write"; echo w > $T/tgt/sub/w; cat $T/tgt/sub/w
        """, env={"T": T})
    s = res.sections()
    assert s["sub"] == "f\ng\ntgt-sub", res
    assert s["other"] == "src-both", res
    assert s["write"] == "w", res
    assert os.path.isfile(f"{T}/tgt/sub/w") and not os.path.exists(f"{T}/src/sub/w")


def test_except_with_cow(vu, layers):
    T = layers
    os.makedirs(f"{T}/cow")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow,except=/sub $T/cow $T/tgt || echo MOUNT-FAILED
        echo x >> $T/tgt/sub/g; echo y >> $T/tgt/t
        """, env={"T": T})
    assert res.rc == 0, res
    with open(f"{T}/tgt/sub/g") as f:
        assert f.read() == "tgt-g\nx\n", "except=/sub is the host's: written for real"
    with open(f"{T}/tgt/t") as f:
        assert f.read() == "T\n"
    assert os.path.isfile(f"{T}/cow/t") and not os.path.exists(f"{T}/cow/sub")


def test_nochcopy_chmod_records_metadata(vu, layers):
    T = layers
    os.makedirs(f"{T}/cow")
    before = manifest(f"{T}/tgt")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow,nochcopy $T/cow $T/tgt || echo MOUNT-FAILED
        chmod 600 $T/tgt/t; echo "rc=$?"
        stat -c %a $T/tgt/t; cat $T/tgt/t
        """, env={"T": T})
    assert res.lines == ["rc=0", "600", "T"], res
    meta = f"{T}/cow/.-/t\x7f"
    with open(meta) as f:
        assert "mode=600" in f.read().split("\n")
    assert not os.path.exists(f"{T}/cow/t"), "nochcopy: no copy of the file"
    assert diff_manifest(before, manifest(f"{T}/tgt")) == [], res


@pytest.mark.parametrize("mode", ["bind", "cow"])
def test_ro_makes_writes_fail(vu, layers, mode):
    T = layers
    os.makedirs(f"{T}/cow")
    src = "$T/src" if mode == "bind" else "$T/cow"
    opts = "ro" if mode == "bind" else "ro,cow"
    before = {d: manifest(f"{T}/{d}") for d in ("src", "tgt")}
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs -o {opts} {src} $T/tgt || echo MOUNT-FAILED
        cd $T/tgt
        cat both
        echo x > both; echo "write=$?"
        echo x > new; echo "create=$?"
        mkdir d; echo "mkdir=$?"
        rm both; echo "rm=$?"
        chmod 600 both; echo "chmod=$?"
        ln -s both l; echo "symlink=$?"
        mv both b2; echo "mv=$?"
        grep " $T/tgt " /proc/mounts | cut -d' ' -f4 | cut -d, -f1
        """, env={"T": T})
    expect = "src-both" if mode == "bind" else "tgt-both"
    assert res.lines == [expect, "write=1", "create=1", "mkdir=1", "rm=1", "chmod=1",
                         "symlink=1", "mv=1", "ro"], res
    assert res.err.count("Read-only file system") == 7, res
    for d in ("src", "tgt"):
        assert diff_manifest(before[d], manifest(f"{T}/{d}")) == [], res
    assert set(os.listdir(f"{T}/cow")) <= {".-"}, res


def test_mincow_copies_up_when_target_refuses(vu, mincow_tree):
    """VUOS mincow tries a change on TARGET and copies the file up when the
    kernel answers EACCES or EPERM. A root-owned, world-writable file may
    be written by 65534 but not chmod-ed nor given explicit times: those
    must be done on a copy, not fail."""
    T = mincow_tree
    write(f"{T}/lower/shared", "W\n", 0o666)
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o mincow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        chmod 600 shared; echo "chmod=$?"
        touch -d @1000000000 shared; echo "touch=$?"
        stat -c '%a %Y' shared
        """, user=NOBODY, env={"T": T})
    assert res.lines == ["chmod=0", "touch=0", "600 1000000000"], res
    st = os.stat(f"{T}/lower/shared")
    assert oct(st.st_mode & 0o7777) == oct(0o666)


def test_mincow_rename_in_place_when_allowed(vu, mincow_tree):
    """mincow changes TARGET itself wherever the user may (VUOS tries the
    rename on TARGET first and falls back to SOURCE on EACCES/EPERM): in a
    writable lower directory, mv renames the lower file."""
    T = mincow_tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o mincow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        mv userf userf2; echo "mv=$?"
        mv rodir/inside rodir/inside2; echo "mv2=$?"
        ls . rodir
        """, user=NOBODY, env={"T": T})
    assert res.lines[:2] == ["mv=0", "mv2=0"], res
    assert sorted(os.listdir(f"{T}/lower")) == ["rodir", "rootf", "userf2"], res
    assert os.listdir(f"{T}/lower/rodir") == ["inside"], "rodir is root's: in COW"
    assert os.path.isfile(f"{T}/cow/rodir/inside2")
    assert not os.path.exists(f"{T}/cow/userf2")
