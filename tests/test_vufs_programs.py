"""Ordinary programs (python3, bash, coreutils, tar, find) work unchanged
when every path they use goes through vufs: `vumount -t vufs / /` and
`vumount -t vufs /usr /usr`. Their output must equal a run without umvu."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import make_tmp, manifest, native, write  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir, udir

SCRIPT = r"""#!/bin/bash
set -u
count() { local n=0; for _ in "$@"; do n=$((n + 1)); done; echo "$n"; }
words=$(printf '%s\n' delta alpha charlie bravo | sort | tr '\n' ' ')
echo "sorted: $words"
echo "count: $(count a b c d e)"
declare -A map=([one]=1 [two]=2)
echo "map: ${map[two]}"
while read -r line; do echo "read: $line"; done <<'END'
first
second
END
case "$0" in */script.sh) echo "name ok" ;; esac
echo "pipe: $(seq 1 100 | awk '{s += $1} END {print s}')"
"""

WORK = r"""
cd "$W"
echo "== python"
/usr/bin/python3 -c 'import json, email, http.client, sqlite3, hashlib
print(json.dumps({"a": [1, 2]}, sort_keys=True), hashlib.sha256(b"x").hexdigest()[:12])
import email.message; m = email.message.EmailMessage(); m["Subject"] = "hi"; print(m["Subject"])'
/usr/bin/python3 -c 'import sys, os; print(sys.prefix, os.path.exists(sys.executable))'
echo "== bash"
./script.sh
bash ./script.sh | md5sum
echo "== coreutils"
sort -r -k2 data.txt | head -n 3
sort -u data.txt | wc -l
cp -a tree tree.copy && diff -r tree tree.copy && echo "cp -a same"
stat -c '%n %a %s' tree.copy/x/y/file tree.copy/link
readlink tree.copy/link
echo "== find"
find tree -printf '%p %y %m %s\n' | LC_ALL=C sort
find tree -name '*.txt' -newer tree/x | LC_ALL=C sort
echo "== tar"
tar -cf tree.tar --sort=name --mtime=@0 --owner=0 --group=0 tree && tar -tvf tree.tar | awk '{print $1, $3, $NF}'
mkdir out && tar -xf tree.tar -C out && diff -r tree out/tree && echo "tar round trip same"
tar -cf - --sort=name --mtime=@0 tree | gzip -n > tree.tgz && tar -tzf tree.tgz | LC_ALL=C sort | md5sum
echo "== ls"
ls -la --time-style=+ /usr/bin/env /bin/sh | awk '{print $1, $NF}'
"""

MOUNTS = {
    "root-on-root": "vumount -t vufs / /",
    "usr-on-usr": "vumount -t vufs /usr /usr",
    "both": "vumount -t vufs /usr /usr && vumount -t vufs / /",
}


def make_work(top: str) -> str:
    w = os.path.join(top, "w")
    write(f"{w}/script.sh", SCRIPT, 0o755)
    write(f"{w}/data.txt", "".join(f"line{i % 37} {(i * 7919) % 1000:04d}\n"
                                   for i in range(2000)))
    write(f"{w}/tree/x/y/file", "file\n" * 50, 0o640)
    write(f"{w}/tree/a.txt", "a\n")
    write(f"{w}/tree/x/b.txt", "b\n")
    os.symlink("x/y/file", f"{w}/tree/link")
    for dirpath, dirnames, filenames in os.walk(f"{w}/tree"):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (1_000_000_000, 1_000_000_000))
    os.utime(f"{w}/tree/x/b.txt", (2_000_000_000, 2_000_000_000))
    os.utime(f"{w}/tree/x", (1_500_000_000, 1_500_000_000))
    return w


@pytest.fixture(scope="module")
def reference():
    top = make_tmp("vufs-prog-ref-")
    try:
        w = make_work(top)
        res = native("true\n" + WORK, env={"W": w})
        assert res.rc == 0 and res.err == "", res
        after = manifest(w, times=False)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return res.out, after


@pytest.mark.parametrize("mount", list(MOUNTS))
def test_programs_under_vufs(vu, tdir, reference, mount):
    w = make_work(tdir)
    res = vu("vu_insmod vufs; " + MOUNTS[mount] + " || echo MOUNT-FAILED\n" + WORK,
             env={"W": w})
    out, after = reference
    assert res.out == out, res
    assert res.err == "", res
    assert res.rc == 0, res
    assert manifest(w, times=False) == after, res


def test_open_returns_lowest_free_descriptor(vu, tdir):
    """POSIX: open() returns the lowest descriptor not open. Programs rely
    on it (close(0); open(file) to set stdin), also for virtual files."""
    write(f"{tdir}/src/f", "data\n")
    os.mkdir(f"{tdir}/tgt")
    script = """\
        python3 - <<'EOF'
        import os
        fd = os.open("$P/f", os.O_RDONLY)
        os.close(fd)
        print("reused", os.open("$P/f", os.O_RDONLY) == fd)
        os.close(0)
        print("stdin", os.open("$P/f", os.O_RDONLY))
        print(os.read(0, 10).decode().strip())
        EOF
        """
    host = native(script.replace("$P", f"{tdir}/src"))
    assert host.lines == ["reused True", "stdin 0", "data"], host
    res = vu(f"vu_insmod vufs\nvumount -t vufs {tdir}/src {tdir}/tgt || echo MOUNT-FAILED\n"
             + textwrap.dedent(script).replace("$P", f"{tdir}/tgt"))
    assert res.lines == host.lines, res


FD_REUSE = """\
    python3 - <<'EOF'
    import os
    fd = os.open("$V/f", os.O_RDONLY)     # through the mount
    os.close(fd)
    d = os.open("$H", os.O_RDONLY | os.O_DIRECTORY)   # a host dir, same number
    print("same number", fd == d)
    print("fstatat", os.stat("g", dir_fd=d).st_size)
    with open(os.open("g", os.O_RDONLY, dir_fd=d)) as f:
        print("openat", f.read().strip())
    os.fchdir(d)
    print("fchdir", os.getcwd(), open("g").read().strip())
    EOF
    """


def test_descriptor_number_reused_after_close(vu, tdir):
    """A descriptor opened through a mount and closed, then the same number
    given by the kernel to a host directory: *at() calls and fchdir on the
    new descriptor must use the new directory, not the closed file."""
    write(f"{tdir}/src/f", "virtual\n")
    write(f"{tdir}/host/g", "host-g\n")
    os.mkdir(f"{tdir}/tgt")
    script = textwrap.dedent(FD_REUSE).replace("$H", f"{tdir}/host")
    expected = ["same number True", "fstatat 7", "openat host-g",
                f"fchdir {tdir}/host host-g"]
    host = native(script.replace("$V", f"{tdir}/src"))
    assert host.lines == expected, host
    res = vu(f"vu_insmod vufs\nvumount -t vufs {tdir}/src {tdir}/tgt || echo MOUNT-FAILED\n"
             + script.replace("$V", f"{tdir}/tgt"))
    assert res.lines == expected, res


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_fork_exec_loop_in_cow_cwd(vu, tdir, round_):
    """Many short-lived children (find -exec, pipelines) whose cwd and
    descriptors are virtual (a cow mount): every one must see the view (no
    ENOENT from md5sum) and none may be left stopped (no hang)."""
    for i in range(1, 6):
        write(f"{tdir}/lower/f{i}", f"{i}\n")
    os.mkdir(f"{tdir}/cow")
    expected = native(f"cd {tdir}/lower; find . -type f -exec md5sum {{}} + | sort")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs -o cow $T/cow $T/lower || echo MOUNT-FAILED
        cd $T/lower
        for i in $(seq 1 60); do
            find . -type f -exec md5sum {} + | sort > $T/out.$i
        done
        cat $T/out.* | sort | uniq -c | awk '{print $1}' | sort -u
        echo done
        """, env={"T": tdir})
    assert res.lines == ["60", "done"], res
    assert res.err == "", res
    with open(f"{tdir}/out.1") as f:
        assert f.read() == expected.out
