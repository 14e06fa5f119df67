"""VUOS's self-consistency check for vufs: with `vumount -t vufs / /unreal`
done twice, X, /unreal/X and /unreal/unreal/X are the same file. Every
operation below is run through each of the three names inside the view and
must print, and leave on disk, exactly what it gives on the host without
umvu."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import make_tmp, manifest, native  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir, udir

PREFIXES = ["", "/unreal", "/unreal/unreal"]
MTIME = 1_500_000_000

#: operation -> bash script; $P is the prefix, $D the fixture directory
OPS = {
    "stat": """
        stat -c '%n|%F|%f|%s|%Y|%h|%u|%g' $P$D/file $P$D/sub $P$D/link $P$D/dangling
        stat -L -c '%n|%F|%f|%s|%Y' $P$D/link
        stat -c '%F|%f|%s|%Y|%u' $P/etc/passwd $P/usr/bin $P/bin /
        stat $P$D/missing; echo "rc=$?"
        """,
    "read": """
        cat $P$D/file $P$D/link $P$D/sub/a
        md5sum < $P/etc/passwd
        head -c 4096 $P/usr/bin/ls | md5sum
        cat $P$D/dangling; echo "rc=$?"
        cat $P$D/sub; echo "rc=$?"
        """,
    "readdir": """
        ls -a $P$D; ls -a $P$D/sub
        ls -la --time-style=+%s $P$D | sed 1d
        ls $P/etc | md5sum
        find $P$D | sort
        """,
    "readlink": """
        readlink $P$D/link $P$D/dangling $P$D/sub/up
        readlink -f $P$D/sub/up
        readlink $P$D/file; echo "rc=$?"
        readlink $P/bin $P/etc/mtab
        cat $P$D/sub/up/file
        """,
    "write": """
        echo new > $P$D/file; echo more >> $P$D/file; cat $P$D/file
        printf x > $P$D/newfile; cat $P$D/newfile; echo
        echo via-link > $P$D/link; cat $P$D/file
        truncate -s 2 $P$D/sub/a; cat $P$D/sub/a; echo
        echo x > $P$D/nodir/f; echo "rc=$?"
        """,
    "rename": """
        mv $P$D/file $P$D/renamed; cat $P$D/renamed
        mv $P$D/sub $P$D/sub2; ls $P$D $P$D/sub2
        mv $P$D/renamed $P$D/sub2/a; cat $P$D/sub2/a
        mv $P$D/missing $P$D/x; echo "rc=$?"
        mv -T $P$D/sub2 $P$D/empty; echo "rc=$?"
        """,
    "unlink": """
        rm $P$D/file; rm $P$D/link; rmdir $P$D/empty
        ls $P$D; cat $P$D/file; echo "rc=$?"
        rmdir $P$D/sub; echo "rc=$?"
        rm $P$D/sub; echo "rc=$?"
        rm -r $P$D/sub; ls $P$D
        """,
    "symlink": """
        ln -s file $P$D/sl; ln -s /nonexistent $P$D/dl; ln -s ../file $P$D/sub/up2
        readlink $P$D/sl $P$D/dl $P$D/sub/up2
        cat $P$D/sl $P$D/sub/up2
        ln -s x $P$D/file; echo "rc=$?"
        ls -l --time-style=+ $P$D | sed 1d | awk '{print $1, $NF}'
        """,
    "chmod": """
        chmod 600 $P$D/file; chmod 700 $P$D/sub; chmod 604 $P$D/link
        stat -c '%n %a' $P$D/file $P$D/sub $P$D/link
        chmod 644 $P$D/missing; echo "rc=$?"
        """,
    "mkdir-link": """
        mkdir $P$D/new $P$D/sub/deep; mkdir $P$D/file; echo "rc=$?"
        ln $P$D/file $P$D/hard; stat -c '%n %h' $P$D/file $P$D/hard
        echo hl >> $P$D/hard; cat $P$D/file
        ls -a $P$D $P$D/sub
        """,
}


def make_fixture(top: str) -> str:
    d = os.path.join(top, "t")
    os.makedirs(os.path.join(d, "sub"))
    os.mkdir(os.path.join(d, "empty"))
    with open(os.path.join(d, "file"), "w") as f:
        f.write("hello\n")
    os.chmod(os.path.join(d, "file"), 0o640)
    with open(os.path.join(d, "sub", "a"), "w") as f:
        f.write("aaa\n")
    os.symlink("file", os.path.join(d, "link"))
    os.symlink("/nonexistent/x", os.path.join(d, "dangling"))
    os.symlink("..", os.path.join(d, "sub", "up"))
    for path in (os.path.join(d, "file"), os.path.join(d, "sub", "a"),
                 os.path.join(d, "sub"), os.path.join(d, "empty"), d, top):
        os.utime(path, (MTIME, MTIME))
    for link in ("link", "dangling", "sub/up"):
        os.utime(os.path.join(d, link), (MTIME, MTIME), follow_symlinks=False)
    return d


def normalize(text: str, d: str, prefix: str) -> str:
    if prefix:
        text = text.replace(prefix + d, "D")
    return text.replace(d, "D")


def state(d: str) -> dict:
    """What the operations leave on disk (no times nor inodes)."""
    return manifest(d, times=False)


@pytest.fixture(scope="module")
def reference():
    """Each operation run natively on its own fixture: output and state."""
    cache = {}

    def get(op):
        if op not in cache:
            top = make_tmp("vufs-ref-")
            try:
                d = make_fixture(top)
                # as many lines before the operation as in the view (bash's
                # error messages carry line numbers)
                res = native(f"true\ntrue\nP=; D={d}\n" + OPS[op], cwd=top)
                cache[op] = (normalize(res.out, d, ""), normalize(res.err, d, ""),
                             res.rc, state(d))
            finally:
                shutil.rmtree(top, ignore_errors=True)
        return cache[op]
    return get


@pytest.mark.skipif(os.path.lexists("/unreal"), reason="the host has a /unreal")
@pytest.mark.parametrize("prefix", PREFIXES, ids=["X", "unreal-X", "unreal2-X"])
@pytest.mark.parametrize("op", list(OPS))
def test_same_result_through_each_layer(vu, reference, tdir, op, prefix):
    d = make_fixture(tdir)
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs / /unreal && vumount -t vufs / /unreal || echo MOUNT-FAILED
        P={prefix}; D={d}
        """ + OPS[op], cwd=tdir)
    assert "MOUNT-FAILED" not in res.out, res
    out, err, rc, after = reference(op)
    assert normalize(res.out, d, prefix) == out, res
    assert normalize(res.err, d, prefix) == err, res
    assert res.rc == rc, res
    assert state(d) == after, res
    assert not os.path.lexists("/unreal")
