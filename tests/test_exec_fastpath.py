"""execve decided by the C core (csrc/fastpath.c, script_untouched): an
exec reaching nothing virtual runs as it is, with no stop in Python, but
only when neither the file nor its `#!` interpreter lies below a mount.
Each case below must give what the Python path gives: a script outside the
mount whose interpreter is only in the view, an interpreter that is itself
a script (the kernel's chain, through the view), an interpreter with an
argument, a script with a relative interpreter, a program below the bind,
a forked child's exec right after its fork (the C core knows the child
from its parent's entry), and a program below a noexec bind onto itself.
As root and as an unprivileged user.
"""

from __future__ import annotations

import os
import shutil

import pytest

from _vufs_helpers import NOBODY, chown_tree, make_tmp, vu  # noqa: F401

SH = "/bin/sh"


def write(path, text, mode=0o755):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_exec_decided_in_c_matches_the_view(vu, user):
    base = make_tmp(owner=user)
    try:
        src, mnt, out = f"{base}/src", f"{base}/mnt", f"{base}/out"
        for d in (src, mnt, out):
            os.mkdir(d)
        # below the mount (only in the view): an interpreter, and one that
        # is a script in its turn
        write(f"{src}/interp", f"#!{SH}\necho \"interp:$1\"; exec {SH} \"$@\"\n")
        write(f"{src}/chain", f"#!{mnt}/interp\necho \"chain:$1\"; exec {SH} \"$1\"\n")
        write(f"{src}/prog", f"#!{SH}\necho \"prog:$0\"\n")
        # outside the mount: scripts that name them
        write(f"{out}/via-mount", f"#!{mnt}/interp\necho \"script body\"\n")
        write(f"{out}/via-chain", f"#!{mnt}/chain\necho \"chain body\"\n")
        write(f"{out}/plain", f"#!{SH} -e\necho \"plain:$0\"\n")
        write(f"{out}/relative", "#!sh\necho relative\n")
        if user is not None:
            chown_tree(base, user)
        res = vu(f"""
            vu_insmod vufs
            vumount -t vufs {src} {mnt}; echo "mount=$?"
            {out}/via-mount; echo "rc1=$?"
            {out}/via-chain; echo "rc2=$?"
            {out}/plain; echo "rc3=$?"
            {out}/relative; echo "rc4=$?"
            {mnt}/prog; echo "rc5=$?"
            cd {mnt} && ./prog; cd /
            (exec /bin/true); echo "rc6=$?"
            vumount -t vufs -o noexec {src} {src}; echo "noexec=$?"
            {src}/prog; echo "rc7=$?"
            for i in 1 2 3; do /bin/echo "loop$i"; done
            """, user=user)
        assert "mount=0" in res.out, res
        lines = res.out.splitlines()
        # the interpreter below the mount ran the script (the kernel alone
        # would not find it: ENOENT, 127)
        assert f"interp:{out}/via-mount" in lines and "script body" in lines, res
        assert "rc1=0" in lines, res
        # an interpreter that is a script: the chain goes through the view
        assert f"interp:{mnt}/chain" in lines and f"chain:{out}/via-chain" in lines, res
        assert "rc2=0" in lines and "chain body" in lines, res
        assert f"plain:{out}/plain" in lines and "rc3=0" in lines, res
        # a relative interpreter: the kernel's ENOENT, as without umvu
        assert "rc4=127" in lines or "rc4=126" in lines, res
        # a script below the mount is named as the caller named it ($0)
        assert f"prog:{mnt}/prog" in lines and "rc5=0" in lines, res
        assert "prog:./prog" in lines, res
        assert "rc6=0" in lines and "loop3" in lines, res
        # a bind onto itself with noexec: the C core leaves execs below any
        # mount to Python, which refuses (EACCES: 126)
        assert "noexec=0" in lines and "rc7=126" in lines, res
    finally:
        shutil.rmtree(base, ignore_errors=True)
