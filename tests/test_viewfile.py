"""View files (umvu/viewfile.lark, umvu/viewfile.py): the grammar, its
errors (line, column, caret), `umvu --check`, `umvu --view` (nothing runs
in a half-built view) and the round trip file -> view -> --dump -> file."""

from __future__ import annotations

import os
import subprocess

import pytest

from umvu import viewfile
from umvu.viewfile import ViewFileError, parse

ENV = {"HOME": "/home/u", "XDG": "/x"}


def stmts(text, env=ENV):
    return [(s.kind, s.args, s.opts) for s in parse(text, "v.vu", env)]


def error(text, env=ENV, check=False) -> ViewFileError:
    with pytest.raises(ViewFileError) as info:
        statements = parse(text, "v.vu", env)
        if check:
            viewfile.check(statements)
    return info.value


# ---- valid files ------------------------------------------------------------

def test_the_helper_words():
    text = """\
# a build root
insmod vufs unrealuidgid
insmod -p vumisc
mount -t vufs -o cow ~/st /etc
mount -t vufs -o ro -o except=/a -r /usr /mnt
stack /dev/net/n
user root
hostname box
time-scale 2
name demo
"""
    assert stmts(text) == [
        ("insmod", ["vufs", "unrealuidgid"], {}),
        ("insmod", ["vumisc"], {"permanent": True}),
        ("mount", ["/home/u/st", "/etc"], {"type": "vufs", "options": "cow"}),
        ("mount", ["/usr", "/mnt"], {"type": "vufs", "options": "ro,except=/a",
                                     "readonly": True}),
        ("stack", ["/dev/net/n"], {}),
        ("user", ["root"], {}),
        ("hostname", ["box"], {}),
        ("time-scale", ["2"], {}),
        ("name", ["demo"], {}),
    ]


def test_blank_lines_comments_and_no_final_newline():
    assert stmts("\n\n   # only a comment\n\t\ninsmod vufs   # trailing\n\nuser root") == [
        ("insmod", ["vufs"], {}), ("user", ["root"], {})]
    assert stmts("") == []
    assert stmts("# nothing\n") == []


def test_variables():
    text = """\
set STORE = ${STATE:-$HOME/.state}/umvu
set NAME=box
mount -t vufs -o cow $STORE ${XDG}/etc
hostname "$NAME-1"
hostname '$NAME'
hostname a#b
hostname "q\\"uote\\$"
"""
    assert stmts(text) == [
        ("mount", ["/home/u/.state/umvu", "/x/etc"], {"type": "vufs", "options": "cow"}),
        ("hostname", ["box-1"], {}),
        ("hostname", ["$NAME"], {}),
        ("hostname", ["a#b"], {}),
        ("hostname", ['q"uote$'], {}),
    ]
    # a set variable wins over the environment, later sets over earlier
    assert stmts("set HOME = /h\nset HOME = /k\nuser ~/x\n") == [("user", ["/k/x"], {})]
    # ${VAR:-default} when VAR is empty too, as in the shell
    assert stmts("set E =''\nuser ${E:-d}\n") == [("user", ["d"], {})]


def test_export_sets_a_variable_and_a_statement():
    assert stmts("export X = 1\nuser $X\n") == [("export", ["X", "1"], {}),
                                               ("user", ["1"], {})]


def test_line_continuation():
    assert stmts("mount -t vufs \\\n   /a \\\n   /b\n") == [
        ("mount", ["/a", "/b"], {"type": "vufs"})]


def test_include(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mods.vu").write_text("set M = vufs\ninsmod $M\n")
    top = tmp_path / "top.vu"
    top.write_text("include sub/mods.vu\nmount -t $M /a /b\n")
    got = viewfile.parse_file(str(top), ENV)
    assert [(s.kind, s.args) for s in got] == [("insmod", ["vufs"]), ("mount", ["/a", "/b"])]
    assert got[0].where.file == str(tmp_path / "sub" / "mods.vu")
    assert (got[0].where.line, got[0].where.column) == (2, 1)


# ---- errors: line, column, caret --------------------------------------------

@pytest.mark.parametrize("text, line, column, words", [
    ("insmod\n", 1, 7, "unexpected end of line: expected a word"),
    ("insmod vufs\nmkdir /x\n", 2, 1, "unknown statement 'mkdir'"),
    ("mount -t vufs /a\n", 1, 17, "expected a word"),
    ("mount -t vufs /a /b /c\n", 1, 21, "unexpected '/c'"),
    ("mount -x /a /b\n", 1, 7, "mount: unknown option -x"),
    ("\n\nuser 'root\n", 3, 6, "unterminated 'quote'"),
    ("user $NOPE\n", 1, 6, "undefined variable NOPE"),
    ("user /a/${NOPE}\n", 1, 9, "undefined variable NOPE"),
    ("user ${1x}\n", 1, 6, "bad variable name"),
    ("set 1 = 2\n", 1, 5, "expected a variable name"),
    ("set X 2\n", 1, 7, "expected '='"),
    ("include /no/such/file.vu\n", 1, 9, "No such file or directory"),
])
def test_syntax_errors(text, line, column, words):
    err = error(text)
    assert (err.where.line, err.where.column) == (line, column), str(err)
    assert words in err.message
    shown = str(err).splitlines()
    assert shown[0].startswith(f"v.vu:{line}:{column}: ")
    # the line, then a caret under the column
    assert shown[1] == "    " + text.splitlines()[line - 1]
    assert shown[2] == "    " + " " * (column - 1) + "^"


@pytest.mark.parametrize("text, line, column, words", [
    ("insmod nosuchmodule\n", 1, 8, "insmod nosuchmodule: no such module"),
    ("insmod vufs 9bad\n", 1, 13, "invalid module name"),
    ("mount -t vufs /a /b\n", 1, 1, "needs module vufs: add 'insmod vufs'"),
    ("insmod vufs\nmount /a /b\n", 2, 1, "mount needs -t TYPE"),
    ("user nobody\n", 1, 1, "user needs module unrealuidgid"),
    ("insmod unrealuidgid\nuser no-such-user\n", 2, 6, "no such user"),
    ("hostname box\n", 1, 1, "hostname needs module vumisc"),
    ("insmod vumisc\nhostname ''\n", 2, 10, "1 to 64 bytes"),
    ("insmod vumisc\ntime-scale fast\n", 2, 12, "not a number"),
    ("insmod vumisc\ntime-scale -1\n", 2, 12, "not a number"),
])
def test_check_errors(text, line, column, words):
    err = error(text, check=True)
    assert (err.where.line, err.where.column) == (line, column), str(err)
    assert words in err.message, str(err)


def test_include_loop(tmp_path):
    (tmp_path / "a.vu").write_text("include b.vu\n")
    (tmp_path / "b.vu").write_text("\ninclude a.vu\n")
    with pytest.raises(ViewFileError) as info:
        viewfile.parse_file(str(tmp_path / "a.vu"), ENV)
    assert info.value.where.file.endswith("b.vu")
    assert (info.value.where.line, info.value.where.column) == (2, 9)
    assert "loop of includes" in info.value.message


def test_error_in_an_included_file_names_it(tmp_path):
    (tmp_path / "inc.vu").write_text("insmod vufs\nuser\n")
    (tmp_path / "top.vu").write_text("include inc.vu\n")
    with pytest.raises(ViewFileError) as info:
        viewfile.parse_file(str(tmp_path / "top.vu"), ENV)
    assert str(info.value).startswith(f"{tmp_path / 'inc.vu'}:2:5: ")


# ---- formatting -------------------------------------------------------------

def test_format_reads_back():
    text = """\
name 'my view'
insmod -p vumisc
insmod vufs unrealuidgid
mount -t vufs -o cow,except=/a ~/st /etc
mount -t vufs -r '/a b' "/it's"
user root
hostname box
time-scale 0.5
"""
    got = parse(text, "v.vu", ENV)
    assert viewfile.format_statements(got, home="/home/u") == text
    assert parse(viewfile.format_statements(got), "v.vu", ENV) == got


def test_statements_pass_through_json():
    got = parse("insmod vufs\nmount -t vufs -o cow /a /b\n", "v.vu", ENV)
    back = viewfile.loads(viewfile.dumps(got))
    assert back == got and back[1].where == got[1].where


def test_from_state_orders_and_names():
    state = {"name": "", "modules": [["vufs", False], ["vumisc", True]],
             "mounts": [{"type": "vumiscuname", "source": "none",
                         "target": viewfile.UNAME_DIR, "options": "",
                         "readonly": False, "settings": {"nodename": "box"}},
                        {"type": "vufs", "source": "/s", "target": "/t",
                         "options": "nosuid,cow", "readonly": True}],
             "uid": 0, "real_uid": 1000}
    assert viewfile.format_statements(viewfile.from_state(state)) == (
        "insmod -p vumisc\ninsmod vufs\nmount -t vufs -o nosuid,cow -r /s /t\n"
        "user root\nhostname box\n")
    state["uid"] = 1000         # the user it really is: nothing to say
    assert "user" not in viewfile.format_statements(viewfile.from_state(state))


def test_grammar_is_package_data():
    assert os.path.isfile(viewfile.grammar_path())


# ---- umvu --check, umvu --view -------------------------------------------------

def _umvu(umvu_bin, env, *args, **kw):
    return subprocess.run([str(umvu_bin), *args], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)


def test_check(umvu_bin, env, tmp_path):
    good = tmp_path / "good.vu"
    good.write_text("insmod vufs\nmount -t vufs -o cow /tmp /etc\n")
    bad = tmp_path / "bad.vu"
    bad.write_text("insmod vufs\nmount -t vufs -o cow /tmp\n")
    r = _umvu(umvu_bin, env, "--check", str(good))
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{good}: ok (2 statements)\n", "")
    r = _umvu(umvu_bin, env, "--check", str(bad))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"umvu: {bad}:2:26: unexpected end of line: expected a word\n"
                        "    mount -t vufs -o cow /tmp\n"
                        "                             ^\n")
    r = _umvu(umvu_bin, env, "--check", str(tmp_path / "none.vu"))
    assert r.returncode == 2 and "No such file or directory" in r.stderr


def test_a_failing_statement_stops_before_cmd(run_umvu, tmp_path):
    view = tmp_path / "v.vu"
    view.write_text("insmod vufs\n"
                    "mount -t vufs -o cow /tmp /etc\n"
                    f"mount -t vufs {tmp_path}/missing /opt\n"
                    "insmod vumisc\n")
    marker = tmp_path / "ran"
    r = run_umvu(["touch", str(marker)], opts=("-N", "--view", str(view)))
    assert r.returncode == 2
    assert not marker.exists()
    assert f"umvu: {view}:3:1: mount -t vufs {tmp_path}/missing /opt: No such " \
           "file or directory\n" in r.stderr
    assert "touch did not run" in r.stderr
    # a syntax or check error: nothing starts at all
    view.write_text("insmod vufs\nhostname box\n")
    r = run_umvu(["touch", str(marker)], opts=("-N", "--view", str(view)))
    assert r.returncode == 2 and not marker.exists()
    assert r.stderr.startswith(f"umvu: {view}:2:1: hostname needs module vumisc")


def test_dump_outside_a_view(umvu_bin, env):
    r = _umvu(umvu_bin, env, "--dump")
    assert (r.returncode, r.stderr) == (1, "umvu: --dump: not running under umvu\n")


def test_round_trip_as_nobody(run_umvu):
    """file -> running view -> vuname --dump / umvu --dump -> the same file,
    unprivileged (so that `user root` is a change)."""
    home = run_umvu.home("nobody")
    (home / "st").mkdir()
    os.chown(home / "st", 65534, 65534)
    text = """\
name demo
insmod vufs unrealuidgid vumisc
mount -t vufs -o cow ~/st /etc
mount -t vufs -r /usr/share /opt/share
mount -t vufs -o except=/bin /usr /opt/usr
user root
hostname box
time-scale 0.5
"""
    view = home / "demo.vu"
    view.write_text(text)
    r = run_umvu("id -u; hostname; vuname --dump; echo ==; umvu --dump", user="nobody",
                 opts=("-N", "--view", str(view)))
    assert r.returncode == 0, r.stderr
    uid, host, rest = r.stdout.split("\n", 2)
    assert (uid, host) == ("0", "box")
    first, second = rest.split("==\n")
    assert first == text and second == text
    # and the dump builds the same view again
    (home / "again.vu").write_text(first)
    r = run_umvu("vuname --dump", user="nobody",
                 opts=("-N", "--view", str(home / "again.vu")))
    assert (r.returncode, r.stdout) == (0, text), r.stderr


def test_a_view_built_by_hand_dumps(run_umvu):
    r = run_umvu("vu_insmod vufs && vumount -t vufs -o mincow /tmp /var/tmp && "
                 "vuname MyView && vuname --dump")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("name MyView\ninsmod vufs\n"
                        "mount -t vufs -o mincow /tmp /var/tmp\n")
