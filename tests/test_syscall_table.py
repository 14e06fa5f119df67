"""The declarative syscall table is the single source of the filter, the C
fast-path entries and docs/syscalls.md; and a view with nothing loaded
stops on nothing."""

import os
import subprocess

from umvu import seccomp_filter, syscall_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_coverage_page_is_generated_from_the_table():
    with open(os.path.join(ROOT, "docs", "syscalls.md")) as page:
        assert page.read() == syscall_table.coverage_markdown(), \
            "docs/syscalls.md is stale: run `make docs`"


def test_every_x86_64_number_once():
    numbers = [s.nr for s in syscall_table.TABLE]
    assert len(numbers) == len(set(numbers))
    assert {0, 1, 59, 257, 435, 437} <= set(numbers)
    assert all(s.family in syscall_table.FAMILIES for s in syscall_table.TABLE)


def test_filter_traps_exactly_what_is_asked():
    base = seccomp_filter.trapped_numbers()
    assert base == {syscall_table.NR["mount"], syscall_table.NR["umount2"],
                    syscall_table.NR["pivot_root"]} | {
        s.nr for s in syscall_table.TABLE if s.family == "mount"}
    ids = seccomp_filter.trapped_numbers(["id"])
    assert syscall_table.NR["getuid"] in ids and syscall_table.NR["read"] not in ids


def test_a_view_with_nothing_loaded_stops_on_nothing(tmp_path, env):
    log = tmp_path / "trace.log"
    res = subprocess.run(["umvu", "-N", "--trace", "-o", str(log), "--",
                          "sh", "-c", "ls / >/dev/null; cat /etc/hostname; id -u"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert log.read_text() == "", "a view with no module intercepted calls"
