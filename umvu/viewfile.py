"""View files: a saved view, in the words of the helper commands.

    insmod vufs unrealuidgid
    mount -t vufs -o cow ~/st /etc
    user root
    hostname box

`parse_file(path)` (or `parse(text)`) gives a list of Statement, with
`include` done, `set` applied and every word expanded; `check(statements)`
says whether the modules they need are loaded before them; a mistake is a
ViewFileError that points at its line and column with a caret. The grammar
is umvu/viewfile.lark; the language is described in docs/viewfile.md.
`format_statements` writes statements back as a file (`umvu --dump`).

Statements are applied inside the view by umvu.viewapply, in the first
process of the view, before the command runs (see there why).
"""

from __future__ import annotations

import collections
import os
import re

#: where `hostname` and `time-scale` mount vumisc's settings directories
UNAME_DIR = "/etc/uname"
TIME_DIR = "/etc/vutime"
#: the order statements are written in by format_statements (umvu --dump)
KINDS = ("name", "insmod", "mount", "stack", "user", "hostname", "time-scale",
         "export")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: which module a statement needs (mount: the one its type names)
NEEDS = {"user": "unrealuidgid", "hostname": "vumisc", "time-scale": "vumisc",
         "stack": "vunet"}


class Where(collections.namedtuple("Where", "file line column text",
                                    defaults=("",))):
    """A place in a view file: 1-based line and column, and that line
    (line 0: a command-line flag, named by file)."""
    __slots__ = ()

    def __str__(self):
        if self.line == 0:          # a command-line flag, not a file
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


class ViewFileError(Exception):
    """A mistake in a view file, or a statement that failed to apply."""

    def __init__(self, where: Where, message: str):
        super().__init__(message)
        self.where = where
        self.message = message

    def __str__(self):
        text = f"{self.where}: {self.message}"
        if self.where.text:
            line = self.where.text.rstrip("\n").expandtabs(1)
            text += f"\n    {line}\n    {' ' * (self.where.column - 1)}^"
        return text


class Statement:
    """One statement, its words expanded.

    kind: insmod, mount, stack, user, hostname, time-scale, name, export
    (set and include are done while parsing). args: insmod's modules;
    mount's source and target; export's name and value; the one word of
    the others. opts: insmod {"permanent"}; mount {"type", "options",
    "readonly"}. arg_where: where each word starts (an error about one
    argument points at it)."""

    __slots__ = ("kind", "args", "opts", "where", "arg_where")

    def __init__(self, kind: str, args: list, opts: dict | None = None,
                 where: Where | None = None, arg_where: list | None = None):
        self.kind = kind
        self.args = list(args)
        self.opts = dict(opts or {})
        self.where = where
        self.arg_where = list(arg_where or ())

    def __eq__(self, other):
        return isinstance(other, Statement) and (self.kind, self.args, self.opts) \
            == (other.kind, other.args, other.opts)

    def __repr__(self):
        return f"<Statement {self.format()!r} at {self.where}>"

    def at(self, index: int) -> Where:
        if 0 <= index < len(self.arg_where):
            return self.arg_where[index]
        return self.where

    def to_dict(self) -> dict:
        return {"kind": self.kind, "args": self.args, "opts": self.opts,
                "where": list(self.where) if self.where else None,
                "arg_where": [list(w) for w in self.arg_where]}

    @classmethod
    def from_dict(cls, d: dict) -> "Statement":
        where = Where(*d["where"]) if d.get("where") else None
        return cls(d["kind"], d["args"], d.get("opts"), where,
                   [Where(*w) for w in d.get("arg_where") or ()])

    def format(self, home: str | None = None) -> str:
        """The statement as a line of a view file."""
        words = [self.kind]
        if self.kind == "insmod":
            if self.opts.get("permanent"):
                words.append("-p")
            words += [quote(a) for a in self.args]
        elif self.kind == "mount":
            if self.opts.get("type"):
                words += ["-t", quote(self.opts["type"])]
            if self.opts.get("options"):
                words += ["-o", quote(self.opts["options"])]
            if self.opts.get("readonly"):
                words.append("-r")
            words += [quote(a, home) for a in self.args]
        elif self.kind == "export":
            words += [self.args[0], "=", quote(self.args[1], home)]
        else:
            words += [quote(a, home) for a in self.args]
        return " ".join(words)


def quote(word: str, home: str | None = None) -> str:
    """A word as the parser reads it back: ~ for home, quotes if needed."""
    if home and home != "/" and (word == home or word.startswith(home + "/")):
        rest = word[len(home):]
        if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]*", rest):
            return "~" + rest
    if word and re.fullmatch(r"[A-Za-z0-9_@%+:,./-][A-Za-z0-9_@%+=:,./~-]*", word):
        return word
    if "'" not in word:
        return f"'{word}'"
    return '"' + re.sub(r'(["\\$])', r"\\\1", word) + '"'


def format_statements(statements, home: str | None = None,
                      header: str | None = None) -> str:
    """A view file holding the statements (in order), one a line."""
    lines = [f"# {line}".rstrip() for line in (header or "").splitlines()]
    lines += [s.format(home) for s in statements]
    return "\n".join(lines) + "\n" if lines else ""


# ---- parsing ------------------------------------------------------------

_PARSER = None


def _parser():
    global _PARSER
    if _PARSER is None:
        _PARSER = _make_parser()
    return _PARSER


def _make_parser():
    from lark import Lark
    return Lark.open("viewfile.lark", rel_to=__file__, parser="lalr",
                     lexer="contextual", propagate_positions=True,
                     maybe_placeholders=False)


def grammar_path() -> str:
    return os.path.join(os.path.dirname(__file__), "viewfile.lark")


def parse_file(path: str, env: dict | None = None) -> list[Statement]:
    """The statements of the view file at path (`-` is stdin)."""
    if path == "-":
        import sys
        return parse(sys.stdin.read(), "<stdin>", env)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ViewFileError(Where(path, 1, 1), f"not a text file ({exc.reason})")
    return parse(text, path, env, _seen=(os.path.realpath(path),))


def parse(text: str, filename: str = "<string>", env: dict | None = None,
          _variables: dict | None = None, _seen: tuple = ()) -> list[Statement]:
    """Statements of a view file's text. env gives the variables
    (default os.environ); `set` adds to them for the rest of the file and
    the files it includes."""
    from lark.exceptions import UnexpectedInput
    variables = _variables if _variables is not None else dict(
        os.environ if env is None else env)
    lines = text.splitlines(keepends=True) or [""]
    parser = _parser()
    try:
        tree = parser.parse(text if text.endswith("\n") or not text else text + "\n")
    except UnexpectedInput as exc:
        raise _syntax_error(exc, filename, lines, parser) from None
    out: list[Statement] = []
    for node in tree.children:
        _statement(node, filename, lines, variables, out, _seen)
    return out


def _where(filename, lines, line, column) -> Where:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return Where(filename, line, column, text)


_READABLE = {"WORD": "a word", "DQSTRING": "a word", "SQSTRING": "a word",
             "VARNAME": "a variable name", "_NL": "end of line",
             "$END": "end of file", "PERMANENT": "-p"}


def _readable(names, parser) -> list[str]:
    out = set()
    for name in names:
        if name in _READABLE:
            out.add(_READABLE[name])
            continue
        try:
            out.add(f"'{parser.get_terminal(name).pattern.value}'")
        except (KeyError, AttributeError):
            out.add(name)
    if "end of line" in out:
        out.discard("end of file")
    return sorted(out)


def _syntax_error(exc, filename, lines, parser) -> ViewFileError:
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken
    line, column = max(exc.line, 1), max(exc.column, 1)
    where = _where(filename, lines, line, column)
    expected = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ()
    at_start = expected and {n.lower() for n in expected} >= {"insmod", "mount"}
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type in ("$END", "_NL"):
            what = "end of file" if tok.type == "$END" else "end of line"
            if tok.type == "_NL":
                where = _where(filename, lines, line, len(lines[line - 1].rstrip("\r\n")) + 1)
            return ViewFileError(where, f"unexpected {what}: expected "
                                 + " or ".join(_readable(expected, parser)))
        if at_start:
            return ViewFileError(where, f"unknown statement {str(tok)!r} (one of: "
                                 + ", ".join(STATEMENT_WORDS) + ")")
        option = _unknown_option(filename, lines, line)
        if option is not None:
            return option
        return ViewFileError(where, f"unexpected {str(tok)!r}: expected "
                             + " or ".join(_readable(expected, parser)))
    if isinstance(exc, UnexpectedCharacters):
        char = exc.char
        if char in "\"'":
            return ViewFileError(where, f"unterminated {char}quote{char}")
        if at_start:
            word = lines[line - 1][column - 1:].split(None, 1)
            return ViewFileError(where, f"unknown statement {word[0] if word else char!r} "
                                 "(one of: " + ", ".join(STATEMENT_WORDS) + ")")
        return ViewFileError(where, f"unexpected {char!r}: expected "
                             + " or ".join(_readable(expected, parser)))
    return ViewFileError(where, "syntax error")


_OPTIONS = {"insmod": ("-p",), "mount": ("-t", "-o", "-r")}


def _unknown_option(filename, lines, line) -> ViewFileError | None:
    """A word like -x where a statement takes options: say so, there
    (the parser took it for an argument and fails further on)."""
    text = lines[line - 1]
    words = list(re.finditer(r"\S+", text))
    if not words or words[0].group() not in _OPTIONS:
        return None
    known = _OPTIONS[words[0].group()]
    for m in words[1:]:
        if m.group().startswith("-") and m.group() not in known:
            return ViewFileError(_where(filename, lines, line, m.start() + 1),
                                 f"{words[0].group()}: unknown option {m.group()} "
                                 f"({', '.join(known)})")
    return None


STATEMENT_WORDS = ("insmod", "mount", "stack", "user", "hostname", "time-scale",
                   "name", "set", "export", "include")


def _statement(node, filename, lines, variables, out, seen) -> None:
    from lark import Token
    kind = node.data.replace("_", "-")
    where = _where(filename, lines, node.meta.line, node.meta.column)
    words, opts, word_where = [], {}, []

    def expand(word_node) -> str:
        tok = word_node.children[0]
        return _expand(tok, _where(filename, lines, tok.line, tok.column),
                       variables)

    for child in node.children:
        if isinstance(child, Token):
            if child.type == "PERMANENT":
                opts["permanent"] = True
            elif child.type == "VARNAME":
                words.append(str(child))
                word_where.append(_where(filename, lines, child.line, child.column))
            continue
        if child.data == "word":
            tok = child.children[0]
            word_where.append(_where(filename, lines, tok.line, tok.column))
            words.append(expand(child))
        elif child.data == "fstype":
            opts["type"] = expand(child.children[0])
        elif child.data == "options":
            opts["options"] = ",".join(filter(None, [opts.get("options", ""),
                                                     expand(child.children[0])]))
        elif child.data == "readonly":
            opts["readonly"] = True
    if kind == "set":
        variables[words[0]] = words[1]
        return
    if kind == "export":
        variables[words[0]] = words[1]
    if kind == "include":
        _include(words[0], word_where[0], filename, variables, out, seen)
        return
    out.append(Statement(kind, words, opts, where, word_where))


def _include(path, where, filename, variables, out, seen) -> None:
    if not os.path.isabs(path) and not filename.startswith("<"):
        path = os.path.join(os.path.dirname(filename), path)
    real = os.path.realpath(path)
    if real in seen:
        raise ViewFileError(where, f"{path}: included by itself (a loop of includes)")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ViewFileError(where, f"include {path}: {exc.strerror}") from None
    out.extend(parse(text, path, None, variables, seen + (real,)))


def _expand(tok, where: Where, variables: dict) -> str:
    """A word's text with its variables and ~ expanded."""
    text = str(tok)
    if tok.type == "SQSTRING":
        return text[1:-1]
    if tok.type == "DQSTRING":
        return _expand_text(text[1:-1], where, variables, 1, quoted=True)
    if text == "~" or text.startswith("~/"):
        home = variables.get("HOME") or os.path.expanduser("~")
        text = home.rstrip("/") + text[1:] if text != "~" else home
        return _expand_text(text, where, variables, 0, quoted=False, shift=-len(home) + 1)
    return _expand_text(text, where, variables, 0, quoted=False)


def _expand_text(text, where, variables, offset, quoted, shift=0) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        col = where.column + offset + i + shift
        if quoted and c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(nxt if nxt in '"\\$' else c + nxt)
            i += 2
            continue
        if c != "$":
            out.append(c)
            i += 1
            continue
        if text.startswith("${", i):
            end = text.find("}", i)
            if end < 0:
                raise ViewFileError(where._replace(column=col),
                                    "unterminated ${")
            body = text[i + 2:end]
            name, sep, default = body.partition(":-")
            if not _VAR.fullmatch(name):
                raise ViewFileError(where._replace(column=col),
                                    f"bad variable name {name!r} in ${{{body}}}")
            value = variables.get(name)
            if value is None or (sep and value == ""):
                if not sep:
                    raise ViewFileError(where._replace(column=col),
                                        f"undefined variable {name} "
                                        f"(set it, or write ${{{name}:-default}})")
                value = _expand_text(default, where, variables,
                                     offset + i + 2 + len(name) + 2, quoted, shift)
            out.append(value)
            i = end + 1
            continue
        m = _VAR.match(text, i + 1)
        if m is None:
            out.append("$")
            i += 1
            continue
        name = m.group()
        if name not in variables:
            raise ViewFileError(where._replace(column=col),
                                f"undefined variable {name} (set it, or write "
                                f"${{{name}:-default}})")
        out.append(variables[name])
        i = m.end()
    return "".join(out)


# ---- checking -----------------------------------------------------------

def parse_scale(text: str):
    """A time-scale factor, a Fraction: 2, 0.5, 1/3 (ValueError otherwise)."""
    from fractions import Fraction
    value = Fraction(text.strip())
    if value < 0:
        raise ValueError("negative")
    return value


def module_serves(cls, fstype: str) -> bool:
    """As View.module_for_type: the module's name prefixes the type, or it
    lists the type (or TYPE.subtype) in fstypes."""
    return fstype.startswith(cls.name) or any(
        fstype == t or fstype.startswith(t + ".") for t in getattr(cls, "fstypes", ()))


def check(statements, find=None, loaded=()) -> list[Statement]:
    """Raise ViewFileError for a statement that cannot work: an unknown
    module, a type, user or setting whose module is not loaded before it,
    a bad value. find(name) -> Module class (default umvu.loader.find);
    loaded: names of modules already in the view. Returns statements."""
    if find is None:
        from .loader import find
    modules: dict[str, type] = {}
    for name in loaded:
        try:
            modules[name] = find(name)
        except OSError:
            pass
    for st in statements:
        if st.kind == "insmod":
            for i, name in enumerate(st.args):
                try:
                    modules[name] = find(name)
                except OSError as exc:
                    reason = exc.strerror or str(exc)
                    if reason.startswith(name + ": "):
                        reason = reason[len(name) + 2:]
                    raise ViewFileError(st.at(i), f"insmod {name}: {reason}") from None
                except Exception as exc:  # a module that fails to import
                    raise ViewFileError(st.at(i), f"insmod {name}: cannot be loaded "
                                        f"({type(exc).__name__}: {exc})") from None
        elif st.kind == "mount":
            fstype = st.opts.get("type")
            if not fstype:
                raise ViewFileError(st.where, "mount needs -t TYPE")
            if not any(module_serves(cls, fstype) for cls in modules.values()):
                owner = _guess_module(fstype)
                raise ViewFileError(st.where, f"mount -t {fstype} needs module "
                                    f"{owner}: add 'insmod {owner}' before this line")
        elif st.kind in NEEDS:
            need = NEEDS[st.kind]
            if st.kind == "user" and _is_self(st.args[0]):
                continue
            if need not in modules:
                raise ViewFileError(st.where, f"{st.kind} needs module {need}: "
                                    f"add 'insmod {need}' before this line")
            if st.kind == "user":
                try:
                    user_ids(st.args[0])
                except KeyError:
                    raise ViewFileError(st.at(0), f"no such user {st.args[0]!r}") from None
            elif st.kind == "hostname":
                if not 0 < len(st.args[0].encode()) <= 64:
                    raise ViewFileError(st.at(0), "a host name holds 1 to 64 bytes")
            elif st.kind == "time-scale":
                try:
                    parse_scale(st.args[0])
                except (ValueError, ZeroDivisionError):
                    raise ViewFileError(st.at(0), f"time-scale {st.args[0]!r}: not a "
                                        "number >= 0 (2, 0.5, 1/3)") from None
            elif st.kind == "stack" and not st.args[0].startswith("/"):
                raise ViewFileError(st.at(0), "stack needs an absolute path")
        elif st.kind == "name" and len(st.args[0].encode()) > 64:
            raise ViewFileError(st.at(0), "a view name holds at most 64 bytes")
    return statements


def _guess_module(fstype: str) -> str:
    for name in ("unrealuidgid", "vufs", "vufuse", "vudev", "vunet", "vumisc",
                 "vubinfmt"):
        if fstype.startswith(name):
            return name
    return fstype


def _is_self(user: str) -> bool:
    try:
        return user_ids(user)[0] == os.getuid()
    except KeyError:
        return False


def user_ids(user: str) -> tuple[int, int, str]:
    """(uid, gid, name) of a user name or number; KeyError if unknown."""
    import pwd
    if user.isdigit():
        uid = int(user)
        try:
            pw = pwd.getpwuid(uid)
            return uid, pw.pw_gid, pw.pw_name
        except KeyError:
            return uid, uid, user
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid, pw.pw_name


# ---- passing statements to the view ----------------------------------------

def dumps(statements) -> str:
    import json
    return json.dumps([s.to_dict() for s in statements], separators=(",", ":"))


def loads(text: str) -> list[Statement]:
    import json
    return [Statement.from_dict(d) for d in json.loads(text)]


# ---- the running view as a view file (umvu --dump, vuname --dump) ---------

def from_state(state: dict) -> list[Statement]:
    """Statements that build the view described by umvu.viewstate (the
    hypervisor's answer to VUCTL_DUMP), in the canonical order: name,
    insmod, mount, stack, user, hostname, time-scale."""
    out: list[Statement] = []
    if state.get("name"):
        out.append(Statement("name", [state["name"]]))
    plain = [name for name, permanent in state.get("modules", ()) if not permanent]
    permanent = [name for name, perm in state.get("modules", ()) if perm]
    if permanent:
        out.append(Statement("insmod", permanent, {"permanent": True}))
    if plain:
        out.append(Statement("insmod", plain))
    tail: list[Statement] = []
    for m in state.get("mounts", ()):
        settings = m.get("settings") or {}
        if m["type"] == "vumiscuname" and m["target"] == UNAME_DIR and "nodename" in settings:
            tail.append(Statement("hostname", [settings["nodename"]]))
            continue
        if m["type"] == "vumisctime" and m["target"] == TIME_DIR and "frequency" in settings:
            tail.append(Statement("time-scale", [settings["frequency"]]))
            continue
        opts = {"type": m["type"]}
        if m.get("options"):
            opts["options"] = m["options"]
        if m.get("readonly"):
            opts["readonly"] = True
        out.append(Statement("mount", [m["source"], m["target"]], opts))
    if state.get("stack"):
        out.append(Statement("stack", [state["stack"]]))
    uid = state.get("uid")
    if uid is not None and uid != state.get("real_uid"):
        import pwd
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        out.append(Statement("user", [name]))
    out.sort(key=lambda s: KINDS.index(s.kind))   # stable: mounts keep their order
    tail.sort(key=lambda s: KINDS.index(s.kind))
    return out + tail


def running_state() -> dict | None:
    """The hypervisor's description of this process's view (None outside
    a view; OSError from an older hypervisor that does not know the tag)."""
    import ctypes
    from . import control
    if control.get_info() is None:
        return None
    tag = ctypes.c_int(control.VUCTL_DUMP)
    size = control.vucall(control.VUCTL, tag, None, 0)
    buf = ctypes.create_string_buffer(size)
    size = control.vucall(control.VUCTL, tag, buf, size)
    import json
    return json.loads(buf.raw[:size].split(b"\0", 1)[0].decode())


def dump_running(home: str | None = None) -> str:
    """This process's view as a view file (RuntimeError outside a view)."""
    state = running_state()
    if state is None:
        raise RuntimeError("not running under umvu")
    if home is None:
        home = os.environ.get("HOME")
    return format_statements(from_state(state), home)
