"""Fuzzing the control path and the mount table from inside a view.

Hypothesis makes batches of random control calls (vu_insmod, vu_rmmod,
vu_lsmod, vuctl, msocket and unknown negative numbers) and mount(2) calls
(types, options, flags and paths of all kinds, within a scratch directory);
a Python program in the view makes them through ctypes. The hypervisor must
answer every one (a result or an errno, never a hang) and the view must
still work at the end of each batch. Bounded to about a minute.
"""

from __future__ import annotations

import json
import time


from hypothesis import HealthCheck, given, settings, strategies as st

RUNNER = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                       ctypes.c_ulong, ctypes.c_char_p]
scratch = sys.argv[1]
answers = 0
for case in json.load(open(sys.argv[2])):
    kind = case[0]
    if kind == "ctl":
        _, nr, args = case
        bufs, raw = [], []
        for a in args:
            if isinstance(a, str):      # a pointer to these bytes
                # room for whatever the hypervisor may write back (vu_info...)
                b = ctypes.create_string_buffer(bytes.fromhex(a), len(a) // 2 + 4096)
                bufs.append(b)
                raw.append(ctypes.c_void_p(ctypes.addressof(b)))
            else:
                raw.append(ctypes.c_long(a))
        raw += [ctypes.c_long(0)] * (6 - len(raw))     # no stale registers
        ret = libc.syscall(ctypes.c_long(nr), *raw)
    else:
        _, src, tgt, fstype, flags, data = case
        enc = lambda s: None if s is None else bytes.fromhex(s)
        tgt = None if tgt is None else os.path.join(scratch, bytes.fromhex(tgt).decode("latin-1").replace("/", "_") or "t").encode("latin-1", "replace")
        ret = libc.mount(enc(src), tgt, enc(fstype), flags, enc(data))
    answers += 1
print("answers", answers, flush=True)
"""

NAMES = ["vufs", "vufuse", "vudev", "vumisc", "vubinfmt", "unrealuidgid", "nosuch",
         "x" * 70, "../etc", ""]
TYPES = ["vufs", "vufuseext2", "vufusesquashfs", "vudevramdisk", "vudevnull",
         "vudevpartx", "vumisctime", "vumiscuname", "vubinfmt", "proc", "tmpfs", "vu", ""]


def _hex(text: bytes) -> str:
    return text.hex()


pointer = st.one_of(st.sampled_from(NAMES).map(lambda s: _hex(s.encode() + b"\0")),
                    st.binary(max_size=80).map(_hex))
integer = st.one_of(st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, -1, 2, 3, 0x5553]),
                    st.just(0xdead0000))
ctl_call = st.tuples(st.just("ctl"), st.sampled_from([-1, -2, -3, -4, -5, -6, -4242]),
                     st.lists(st.one_of(pointer, integer), min_size=0, max_size=6))
mount_call = st.tuples(
    st.just("mount"),
    st.one_of(st.none(), st.sampled_from(["none", "/", "/tmp", "/nonexistent"])
              .map(lambda s: _hex(s.encode() + b"\0")), st.binary(max_size=20).map(_hex)),
    st.one_of(st.none(), st.binary(min_size=1, max_size=12).map(_hex)),
    st.one_of(st.none(), st.sampled_from(TYPES).map(lambda s: _hex(s.encode() + b"\0")),
              st.binary(max_size=12).map(lambda b: _hex(b + b"\0"))),
    st.one_of(st.sampled_from([0, 1, 4096, 8192, 32]), st.integers(0, 2**64 - 1)),
    st.one_of(st.none(), st.sampled_from(["ro", "size=banana", "timeout=abc", "cow", "rw+",
                                          "size=1M", "except=/", "mode=0777"])
              .map(lambda s: _hex(s.encode() + b"\0")), st.binary(max_size=40).map(
                  lambda b: _hex(b + b"\0"))))
batch = st.lists(st.one_of(ctl_call, mount_call), min_size=5, max_size=40)

DEADLINE = time.monotonic() + 60        # the whole fuzz, across examples


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cases=batch)
def test_control_path_answers_everything(run_umvu, tmp_path, cases):
    if time.monotonic() > DEADLINE:
        return                          # bounded: the rest is for another run
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    res = run_umvu(f"""
        python3 {tmp_path}/runner.py {scratch} {tmp_path}/cases.json
        echo "after $?"
        vu_lsmod >/dev/null; echo "lsmod $?"
        vuname -a >/dev/null; echo "vuname $?"
    """, timeout=60)
    out = res.stdout.splitlines()
    assert f"answers {len(cases)}" in out, (cases, res.stdout, res.stderr)
    assert "after 0" in out and "lsmod 0" in out and "vuname 0" in out, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stderr
