"""Calls below a plain vufs bind that the C core walks and rewrites itself
(csrc/fastpath.c): what programs see must be what Python's walk gave, and
the hypervisor must not lend its rights to the walk."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import NOBODY, native, write  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir, udir

#: the same questions, asked of SRC natively and of the bind inside a view
PROBE = """\
    cd /
    for p in $D/f $D/sub/g $D/sub/rel/g $D/abs/o $D/abs/../f $D/loop \\
             $D/sub/g/x $D/nothere $D/nothere/x $D/sub/ $D/f/; do
        echo "${p#$D} $(stat -c '%F %s %a' "$p" 2>&1 | sed "s|$D|D|g")"
        echo "  L $(stat -L -c '%F %s' "$p" 2>&1 | sed "s|$D|D|g")"
    done
    readlink $D/abs $D/sub/rel $D/loop; echo "readlink=$?"
    test -r $D/f; echo "r=$?"; test -x $D/sub; echo "x=$?"; test -w $D/f; echo "w=$?"
    mkdir $D/newd && echo mkdir; chmod 711 $D/newd; stat -c %a $D/newd
    ln -s f $D/newl && readlink $D/newl; touch -h -d @1000000000 $D/newl
    stat -c %Y $D/newl; rm $D/newl; rmdir $D/newd; echo "cleaned=$?"
    ls $D | sort | tr '\\n' ' '; echo
    cd $D/sub
    stat -c '%n %s' g rel/g ../f ../abs/o 2>&1 | sed "s|$D|D|g"
    readlink rel; mkdir dd && stat -c %a dd && rmdir dd; pwd | sed "s|$D|D|g"
    python3 -c '
import os
fd = os.open(".", os.O_RDONLY)
print(os.stat("g", dir_fd=fd).st_size, os.readlink("rel", dir_fd=fd),
      os.path.exists("../nothere"), os.stat("..", dir_fd=fd).st_mode >> 12)'
"""


#: these compare a session started by root with a process in it that gave
#: up root's rights; a runner that is not root cannot start such a session
ROOT_SESSION = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs a session started by root (CI runs as root)")


def hidden_link(top: str, directory: str, target: str, owner: int = 0) -> str:
    """A link to target in a 0700 directory of owner; returns the link."""
    os.chmod(top, 0o755)
    os.makedirs(directory)
    os.symlink(target, f"{directory}/link")
    os.chown(directory, owner, owner)
    os.chmod(directory, 0o700)
    return f"{directory}/link"


def make_src(top: str) -> str:
    src = f"{top}/src"
    write(f"{src}/f", "0123456789\n")
    write(f"{src}/sub/g", "g\n", mode=0o640)
    write(f"{top}/other/o", "o\n")
    os.symlink("../sub", f"{src}/sub/rel")
    os.symlink(f"{top}/other", f"{src}/abs")
    os.symlink("loop", f"{src}/loop")
    return src


def test_bind_answers_as_the_source_does(vu, tdir):
    src = make_src(tdir)
    want = native(PROBE, env={"D": src})
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs {src} {tdir}/view || echo MOUNT-FAILED
        D={tdir}/view
        {PROBE}""")
    # absolute links lead out of the bind alike; only the prefix differs
    assert res.out == want.out, (res, want.out)
    assert sorted(os.listdir(src)) == ["abs", "f", "loop", "sub"]


def test_bind_calls_stop_in_c_only(umvu_bin, env, tdir, tmp_path):
    """stat, readlink, mkdir, open... below a bind never reach Python: the
    --trace log (the calls Python answered) names none of them (opens are
    decided in C and journaled for the mirror), but it does log the mount."""
    src = make_src(tdir)
    log = tmp_path / "trace.log"
    script = (f"vu_insmod vufs; vumount -t vufs {src} {tdir}/view; "
              f"stat -c %s {tdir}/view/f {tdir}/view/sub/rel/g; "
              f"readlink {tdir}/view/abs; "
              f"mkdir {tdir}/view/d2 && rmdir {tdir}/view/d2; cat {tdir}/view/f")
    out = subprocess.run([str(umvu_bin), "-N", "--trace", "-o", str(log),
                          "--", "bash", "-c", script], env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.stdout == f"11\n2\n{tdir}/other\n0123456789\n", out
    trace = log.read_text()
    called = [line for line in trace.splitlines() if f"{tdir}/view/" in line]
    assert not called and f'"{tdir}/view", "vufs"' in trace, trace
    assert not os.path.exists(f"{src}/d2")


def test_nested_mount_and_except_below_a_bind(vu, tdir):
    """A newer mount below the bind, and an except= bind, are Python's."""
    src = make_src(tdir)
    write(f"{tdir}/inner/i", "inner\n")
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs {src} {tdir}/view || echo MOUNT-FAILED
        vumount -t vufs {tdir}/inner {tdir}/view/sub || echo MOUNT2-FAILED
        stat -c %s {tdir}/view/sub/i; cat {tdir}/view/sub/i
        test -e {tdir}/view/sub/g; echo "g hidden=$?"
        stat -c %s {tdir}/view/f
        vumount -t vufs -o except=/sub {src} {tdir}/exc || echo MOUNT3-FAILED
        stat -c %s {tdir}/exc/f; test -e {tdir}/exc/sub/g; echo "except=$?"
        vumount -t vufs -o ro {src} {tdir}/ro || echo MOUNT4-FAILED
        stat -c %s {tdir}/ro/f; mkdir {tdir}/ro/d 2>&1 | sed 's/.*: //'
        """)
    assert res.lines == ["6", "inner", "g hidden=1", "11", "11", "except=1",
                         "11", "Read-only file system"], res
    assert not os.path.exists(f"{src}/d")


@ROOT_SESSION
def test_root_session_walk_does_not_lend_root_rights(vu, tdir):
    """In a root session a process that dropped to 65534 must not see
    through a symlink inside a directory it cannot search."""
    src = make_src(tdir)
    hidden_link(tdir, f"{src}/secret", f"{tdir}/other/o")
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs {src} {tdir}/view || echo MOUNT-FAILED
        stat -L -c %s {tdir}/view/secret/link
        setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups \\
            stat -L -c %s {tdir}/view/secret/link 2>&1 | sed 's/.*: //'
        python3 -c '
import os
os.stat("{tdir}/view/f")
os.setgroups([]); os.setresgid({NOBODY}, {NOBODY}, {NOBODY}); os.setresuid({NOBODY}, {NOBODY}, {NOBODY})
try:
    os.stat("{tdir}/view/secret/link"); print("seen")
except PermissionError:
    print("denied")'
        """)
    assert res.lines == ["2", "Permission denied", "denied"], res


def test_bind_as_nobody_changes_only_the_source(vu, udir):
    src = make_src(udir)
    for root, dirs, files in os.walk(udir):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), NOBODY, NOBODY)
    os.lchown(udir, NOBODY, NOBODY)
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs {src} {udir}/view || echo MOUNT-FAILED
        mkdir {udir}/view/made && chmod 700 {udir}/view/made && echo made
        stat -c '%a %u' {udir}/view/made
        ln -s made {udir}/view/ml && readlink {udir}/view/ml
        """, user=NOBODY)
    assert res.lines == ["made", f"700 {NOBODY}", "made"], res
    assert oct(os.stat(f"{src}/made").st_mode & 0o777) == "0o700"
    assert os.readlink(f"{src}/ml") == "made"
    assert not os.path.exists(f"{udir}/view")


def test_cow_stat_calls_see_the_layers(vu, tdir):
    """The C core answers stat-like calls below a cow mount from the layers
    as vufs keeps them: the top copy, whiteouts, metadata, the hidden .-"""
    lower = f"{tdir}/lower"
    write(f"{lower}/keep", "lower\n")
    write(f"{lower}/edit", "lower\n")
    write(f"{lower}/gone", "lower\n")
    write(f"{lower}/dir/child", "c\n")
    write(f"{lower}/modes", "m\n", mode=0o644)
    os.symlink("keep", f"{lower}/link")
    os.mkdir(f"{tdir}/cow")
    before = {p: open(f"{lower}/{p}").read() for p in ("keep", "edit", "gone")}
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs -o cow,nochcopy {tdir}/cow {lower} || echo MOUNT-FAILED
        cd /
        echo changed-a-lot >> {lower}/edit
        rm {lower}/gone; rm -r {lower}/dir; mkdir {lower}/dir
        chmod 600 {lower}/modes
        for f in keep edit gone dir dir/child modes link .- .-/gone; do
            echo "$f $(stat -c '%F %s %a' {lower}/$f 2>&1 | sed 's/.*: //')"
        done
        readlink {lower}/link; test -r {lower}/keep && echo readable
        test -e {lower}/gone; echo "gone=$?"
        """)
    assert res.lines == [
        "keep regular file 6 644", "edit regular file 20 644",
        "gone No such file or directory", "dir directory 4096 755",
        "dir/child No such file or directory", "modes regular file 2 600",
        "link symbolic link 4 777", ".- No such file or directory",
        ".-/gone No such file or directory", "keep", "readable", "gone=1"], res
    assert {p: open(f"{lower}/{p}").read() for p in before} == before
    assert os.path.exists(f"{lower}/dir/child")
    assert os.stat(f"{lower}/modes").st_mode & 0o777 == 0o644


@ROOT_SESSION
def test_root_without_capabilities_gets_no_more_in_the_view(vu, tdir):
    """A root process that dropped CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    cannot search another user's 0700 directory natively: nor below a bind,
    neither in the C walk nor in Python's."""
    src = make_src(tdir)
    hidden_link(tdir, f"{src}/secret", "../f", owner=1000)
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs {src} {tdir}/view || echo MOUNT-FAILED
        setpriv --bounding-set=-dac_override,-dac_read_search -- bash -c '
            stat -L -c %s {tdir}/view/secret/link 2>&1 | sed "s/.*: //"
            cat {tdir}/view/secret/link 2>&1 | sed "s/.*: //"
            cat {src}/secret/link 2>&1 | sed "s/.*: //"'
        cat {tdir}/view/secret/link
        """)
    assert res.lines == ["Permission denied"] * 3 + ["0123456789"], res


@ROOT_SESSION
def test_walk_outside_mounts_is_the_callers(vu, tdir):
    """In a root session, a nobody process cannot follow a link that lies in
    a root-only host directory, even when the link leads into a mount."""
    src = make_src(tdir)
    hidden_link(tdir, f"{tdir}/private", f"{tdir}/view/f")
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs {src} {tdir}/view || echo MOUNT-FAILED
        setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups \\
            cat {tdir}/private/link 2>&1 | sed 's/.*: //'
        cat {tdir}/private/link
        """)
    assert res.lines == ["Permission denied", "0123456789"], res
