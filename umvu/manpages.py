"""Man pages and bash completion, generated from the commands' parsers.

    python -m umvu.manpages [DIR]       # default: docs/ of the source tree

writes DIR/man/NAME.1 for umvu and every helper (from their argparse
parsers: the options, their help, the epilog) and DIR/completion/NAME
(bash completion: module names, fs types, options). Both are installed
with the package (pyproject: data files under share/man/man1 and
share/bash-completion/completions). tests/test_docs.py checks that the
committed files are what this writes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys

from . import __version__

#: command -> (module with build_parser, one-line summary for NAME)
COMMANDS = {
    "umvu": ("umvu.cli", "run a command in a partial virtual machine (a view)"),
    "vu_insmod": ("umvu.commands.vu_insmod", "load modules into the view"),
    "vu_rmmod": ("umvu.commands.vu_rmmod", "remove modules from the view"),
    "vu_lsmod": ("umvu.commands.vu_lsmod", "list the modules of the view"),
    "vumount": ("umvu.commands.vumount", "mount a service of a module in the view"),
    "vuumount": ("umvu.commands.vuumount", "unmount a service of the view"),
    "vuname": ("umvu.commands.vuname", "print or name the view; dump it as a view file"),
    "vusu": ("umvu.commands.vusu", "become another user in the view (virtual root)"),
    "vustack": ("umvu.commands.vustack", "run a command with a default network stack"),
}

SEE_ALSO = ["umvu(1)", "vu_insmod(1)", "vu_rmmod(1)", "vu_lsmod(1)", "vumount(1)",
            "vuumount(1)", "vuname(1)", "vusu(1)"]


def parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of each command that has one (build_parser())."""
    found = {}
    for name, (module, _) in COMMANDS.items():
        try:
            build = getattr(importlib.import_module(module), "build_parser")
        except (ImportError, AttributeError):
            continue
        found[name] = build()
    return found


# ---- roff ------------------------------------------------------------------

def _esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line if line.startswith((".", "'")) else line)
                     for line in text.split("\n"))


def _option_head(action) -> str:
    if not action.option_strings:
        return f"\\fI{_esc(action.metavar or action.dest)}\\fR"
    parts = []
    for opt in action.option_strings:
        item = f"\\fB{_esc(opt)}\\fR"
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            item += f" \\fI{_esc(str(metavar))}\\fR"
        parts.append(item)
    return ", ".join(parts)


def _paragraphs(text: str) -> list[str]:
    """Plain text (a description, an epilog) as roff: paragraphs, and
    indented blocks (examples) kept as they are."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.split("\n")
        if any(line.startswith("  ") for line in lines[1:]) or block.startswith(" "):
            out += [".PP", ".nf", _esc(block), ".fi"]
        else:
            out += [".PP", _esc(" ".join(line.strip() for line in lines))]
    return out


def manpage(name: str, parser: argparse.ArgumentParser, summary: str) -> str:
    usage = parser.format_usage().strip()
    usage = re.sub(r"^usage:\s*", "", usage)
    usage = re.sub(r"\s+", " ", usage)
    lines = [f'.TH {name.upper()} 1 "" "umvu {__version__}" "umvu manual"',
             ".SH NAME", f"{_esc(name)} \\- {_esc(summary)}",
             ".SH SYNOPSIS", _esc(usage), ".SH DESCRIPTION"]
    lines += _paragraphs(parser.description or summary)
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = {"positional arguments": "ARGUMENTS", "options": "OPTIONS",
                 "optional arguments": "OPTIONS"}.get(group.title, group.title.upper())
        lines.append(f".SH {_esc(title)}")
        if group.description:
            lines += _paragraphs(group.description)
        for action in actions:
            lines += [".TP", _option_head(action)]
            help_text = (action.help or "") % {"prog": name, "default": action.default} \
                if action.help and "%(" in action.help else (action.help or "")
            lines.append(_esc(help_text))
    if parser.epilog:
        lines.append(".SH NOTES")
        lines += _paragraphs(parser.epilog)
    lines += [".SH SEE ALSO", ", ".join(f"\\fB{_esc(s.split('(')[0])}\\fR(1)"
                                         for s in SEE_ALSO if not s.startswith(name + "("))
              + ", docs/viewfile.md, docs/modules.md"]
    return "\n".join(lines) + "\n"


# ---- bash completion ----------------------------------------------------------

def module_names() -> list[str]:
    import umvu.modules as mods
    return sorted(m.name for m in pkgutil.iter_modules(mods.__path__)
                  if not m.name.startswith("_"))


def fs_types() -> list[str]:
    """Every mount type the built-in modules take, as far as they say."""
    types = set()
    for name in module_names():
        types.add(name)
        try:
            pkg = importlib.import_module(f"umvu.modules.{name}")
        except Exception:
            continue
        for attr in ("TYPES", "KINDS"):
            table = getattr(pkg, attr, None)
            if isinstance(table, dict):
                types.update(t for t in table if t.startswith(name))
        sub = getattr(pkg, "__path__", None)
        if name == "vufuse":
            try:
                from umvu.modules.vufuse.programs import BUILTIN
                types.update(f"vufuse{t}" for t in BUILTIN)
            except ImportError:
                pass
        elif name == "vudev" and sub:
            types.update(f"vudev{m.name}" for m in pkgutil.iter_modules(sub)
                         if m.name not in ("device",) and not m.name.startswith("_"))
        elif name == "vumisc":
            types.update(("vumisctime", "vumiscuname"))
    mountable = _mountable()
    return sorted(t for t in types if t not in module_names() or (
        t in mountable and not any(o != t and o.startswith(t) for o in types)))


def _mountable() -> set:
    out = set()
    for name in module_names():
        try:
            pkg = importlib.import_module(f"umvu.modules.{name}")
        except Exception:
            continue
        from umvu.module import Module
        for obj in vars(pkg).values():
            if isinstance(obj, type) and issubclass(obj, Module) and obj is not Module \
                    and "mount" in vars(obj):
                out.add(name)
    return out


def _options(parser) -> list[str]:
    return sorted({o for a in parser._actions for o in a.option_strings
                   if a.help != argparse.SUPPRESS})


COMPLETION = r'''# bash completion for umvu and its helpers (generated by python -m
# umvu.manpages: do not edit). Installed in
# share/bash-completion/completions; each helper's file sources this one.

_umvu_modules="@MODULES@"
_umvu_fstypes="@FSTYPES@"

_umvu_module_names() {
    local extra=""
    [ -d ~/.vu/modules ] && extra=$(cd ~/.vu/modules && ls *.py 2>/dev/null | sed 's/\.py$//')
    echo "$_umvu_modules $extra"
}

_umvu() {
    local cur prev
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    local i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --) _command_offset $((i + 1)); return ;;
            -f|--rc|-V|--viewname|-o|--output|-d|--debug|--kill-after|--view|--check|--cow|--clear|-b|--bind|--ro|--disk|--image|--net|--hostname|--time-scale) ((i++)) ;;
            -*) ;;
            *) _command_offset $i; return ;;
        esac
    done
    case $prev in
        -f|--rc|-o|--output|--view|--check|--disk|--image)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --cow|--clear|-b|--bind|--ro)
            COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --net) COMPREPLY=($(compgen -W "slirp vde: none" -- "$cur")); return ;;
        -d|--debug) COMPREPLY=($(compgen -W "t m s all" -- "$cur")); return ;;
        -V|--viewname|--hostname|--time-scale|--kill-after) return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "@UMVU_OPTIONS@" -- "$cur"))
    else
        COMPREPLY=($(compgen -c -- "$cur"))
    fi
}

_vu_insmod() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "@INSMOD_OPTIONS@" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_umvu_module_names)" -- "$cur"))
    fi
}

_vu_rmmod() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    COMPREPLY=($(compgen -W "$(vu_lsmod 2>/dev/null | cut -d: -f1)" -- "$cur"))
}

_vumount() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -t|--types) COMPREPLY=($(compgen -W "$_umvu_fstypes" -- "$cur")); return ;;
        -o|--options)
            COMPREPLY=($(compgen -W "ro rw cow mincow merge bind except= nochcopy size= mbr offset= sizelimit= monotonic nodename= rw+ prog= pyfs=" -- "$cur"))
            return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "@VUMOUNT_OPTIONS@" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}

_vuumount() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "@VUUMOUNT_OPTIONS@" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(awk '{print $2}' /proc/mounts 2>/dev/null)" -- "$cur"))
    fi
}

_vuname() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    COMPREPLY=($(compgen -W "@VUNAME_OPTIONS@" -- "$cur"))
}

_vusu() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -s|--shell) COMPREPLY=($(compgen -W "$(grep -v '^#' /etc/shells 2>/dev/null)" -- "$cur")); return ;;
        -c|--command) return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "@VUSU_OPTIONS@" -- "$cur"))
    else
        COMPREPLY=($(compgen -u -- "$cur"))
    fi
}

_vustack() {
    local cur=${COMP_WORDS[COMP_CWORD]} i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -f|--family|--families) ((i++)) ;;
            -*) ;;
            *) _command_offset $((i + 1)); return ;;
        esac
    done
    COMPREPLY=($(compgen -f -- "$cur"))
}

complete -F _umvu umvu
complete -F _vu_insmod vu_insmod
complete -F _vu_rmmod vu_rmmod
complete -F _vumount vumount
complete -F _vuumount vuumount
complete -F _vuname vuname
complete -F _vusu vusu
complete -F _vustack vustack
'''


def completion(found: dict) -> str:
    text = COMPLETION.replace("@MODULES@", " ".join(module_names()))
    text = text.replace("@FSTYPES@", " ".join(fs_types()))
    for name in ("umvu", "insmod", "vumount", "vuumount", "vuname", "vusu"):
        key = name if name != "insmod" else "vu_insmod"
        parser = found.get(key)
        text = text.replace(f"@{name.upper()}_OPTIONS@",
                            " ".join(_options(parser)) if parser else "--help")
    return text


def generate(top: str) -> list[str]:
    """Write the man pages and completion files below top; their paths."""
    written = []
    found = parsers()
    man = os.path.join(top, "man")
    os.makedirs(man, exist_ok=True)
    for name, parser in found.items():
        path = os.path.join(man, f"{name}.1")
        _write(path, manpage(name, parser, COMMANDS[name][1]))
        written.append(path)
    comp = os.path.join(top, "completion")
    os.makedirs(comp, exist_ok=True)
    path = os.path.join(comp, "umvu")
    _write(path, completion(found))
    written.append(path)
    for name in COMMANDS:
        if name != "umvu":
            path = os.path.join(comp, name)
            _write(path, f"# bash completion for {name}: see umvu\n"
                         '. "${BASH_SOURCE[0]%/*}/umvu"\n')
            written.append(path)
    return written


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = argv[0] if argv else os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    for path in generate(top):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
