"""The command tree and dispatch that etcdctl gets from spf13/cobra, reproduced.

Finding the command (flags stripped, unique-prefix matching, "Did you mean this?" suggestions),
the two error paths (unknown command: message plus ``Run '... --help'``; bad flag: message plus
usage on stdout), ``-h``/``--help`` and non-runnable parents printing usage, and etcdctl's usage
template rendered through Go's tabwriter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster.ctl.flags import FlagError, FlagSet, FlagSpec
from cluster.ctl.tabwriter import tabwrite

ETCD_VERSION = "3.4.23"
API_VERSION = "3.4"


@dataclass
class Command:
    """A node of the command tree; ``run`` is None for pure groups (``endpoint``)."""

    name: str
    use: str
    short: str
    long: str = ""
    flags: tuple[FlagSpec, ...] = ()
    persistent: tuple[FlagSpec, ...] = ()
    run: Callable[[Invocation], Any] | None = None
    children: list[Command] = field(default_factory=list)
    parent: Command | None = None
    hidden_help: bool = False
    other_spellings: tuple[tuple[str, str], ...] = ()
    """Further ways to call this command, as (arguments, short): quorumctl's etcdctl v2 spellings
    (``member add <name> <url>``; etcdctl has none). Listed under the command in the root's COMMANDS
    only: in a group's narrower column they would realign etcdctl's own lines."""
    exact_name_only: bool = False
    """Found only by its full name, not by a unique prefix: for quorumctl's own commands, so that a
    prefix etcdctl refuses as an unknown command is not taken as one of them."""

    def add(self, *children: Command) -> None:
        for child in children:
            child.parent = self
            self.children.append(child)
        self.children.sort(key=lambda c: c.name)

    @property
    def runnable(self) -> bool:
        return self.run is not None

    def path(self) -> str:
        return self.name if self.parent is None else f"{self.parent.path()} {self.name}"

    def root(self) -> Command:
        return self if self.parent is None else self.parent.root()

    def inherited_specs(self) -> list[FlagSpec]:
        specs: dict[str, FlagSpec] = {}
        node = self.parent
        while node is not None:
            for spec in node.persistent:
                specs.setdefault(spec.name, spec)
            node = node.parent
        return sorted(specs.values(), key=lambda s: s.name)

    def local_specs(self, with_help: bool = True) -> list[FlagSpec]:
        help_flag = FlagSpec("help", "bool", False, f"help for {self.name}", "h")
        specs = [*self.flags, *self.persistent, *([help_flag] if with_help else [])]
        return sorted(specs, key=lambda s: s.name)

    def flag_set(self) -> FlagSet:
        return FlagSet({s.name: s for s in [*self.local_specs(), *self.inherited_specs()]})

    def find_child(self, word: str) -> Command | None:
        for child in self.children:
            if child.name == word:
                return child
        matches = [c for c in self.children if c.name.startswith(word) and not c.exact_name_only]
        return matches[0] if len(matches) == 1 else None


@dataclass
class Invocation:
    """A command being run: its flags (local and inherited) and positional arguments."""

    command: Command
    flags: FlagSet
    args: list[str]
    raw_args: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    """The whole command line (Go's ``os.Args`` without the program), for commands that read it."""


class CommandLineError(Exception):
    """Raised to stop with cobra's error output already decided by ``kind``."""

    def __init__(self, kind: str, message: str, command: Command) -> None:
        super().__init__(message)
        self.kind = kind
        self.command = command


def _levenshtein(a: str, b: str) -> int:
    a, b = a.lower(), b.lower()
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def suggestions(command: Command, typed: str) -> str:
    names = [
        c.name
        for c in command.children
        if c.name != "help" and (_levenshtein(typed, c.name) <= 2 or c.name.lower().startswith(typed.lower()))
    ]
    if not names:
        return ""
    return "\n\nDid you mean this?\n" + "".join(f"\t{name}\n" for name in names)


def _flag_takes_value(command: Command, arg: str) -> bool:
    specs = {s.name: s for s in [*command.local_specs(), *command.inherited_specs()]}
    if arg.startswith("--"):
        spec = specs.get(arg[2:])
        return spec is None or spec.takes_value
    short = {s.shorthand: s for s in specs.values() if s.shorthand}
    spec = short.get(arg[1:])
    return spec is None or spec.takes_value


def _strip_flags(args: list[str], command: Command) -> list[str]:
    words: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            break
        takes_next = (arg.startswith("--") and "=" not in arg and _flag_takes_value(command, arg)) or (
            arg.startswith("-")
            and not arg.startswith("--")
            and "=" not in arg
            and len(arg) == 2
            and _flag_takes_value(command, arg)
        )
        if takes_next:
            if len(rest) <= 1:
                break
            rest.pop(0)
        elif arg and not arg.startswith("-"):
            words.append(arg)
    return words


def _without_first(args: list[str], word: str) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out):
        if arg == word:
            del out[i]
            break
    return out


def find(root: Command, args: list[str]) -> tuple[Command, list[str]]:
    """Locate the command named by ``args``; the rest are its flags and arguments."""
    command, rest = root, list(args)
    while True:
        words = _strip_flags(rest, command)
        if not words:
            break
        child = command.find_child(words[0])
        if child is None:
            break
        rest = _without_first(rest, words[0])
        command = child
    if command.children and command.parent is None:
        words = _strip_flags(rest, command)
        if words:
            message = f'unknown command "{words[0]}" for "{command.path()}"' + suggestions(command, words[0])
            raise CommandLineError("find", message, command)
    return command, rest


def usage(command: Command, with_help_flag: bool = True) -> str:
    """etcdctl's usage text for ``command`` (what ``--help`` prints).

    cobra adds the ``-h, --help`` flag lazily, so a usage printed for a command that was not
    executed (``help <unknown topic>`` printing the root's) lacks it: ``with_help_flag=False``.
    """
    root = command.root()
    text = "NAME:\n"
    if command.parent is None:
        text += f"\t{command.name} - {command.short}\n"
    else:
        text += f"\t{_relative_name(command, root)} - {command.short}\n"
    use_line = command.use if command.parent is None else f"{command.parent.path()} {command.use}"
    if "[flags]" not in use_line:
        use_line += " [flags]"
    text += f"\nUSAGE:\n\t{use_line}\n"
    if command.parent is None:
        text += f"\nVERSION:\n\t{ETCD_VERSION}\n"
    if command.children:
        text += f"\nAPI VERSION:\n\t{API_VERSION}\n"
        text += "\n\nCOMMANDS:\n"
        for sub in _all_subcommands(command):
            if sub.runnable:
                name = _relative_name(sub, command)
                text += f"\t{name}\t{sub.short}\n"
                if command.parent is None:
                    text += "".join(f"\t{name} {args}\t{short}\n" for args, short in sub.other_spellings)
    if command.long:
        text += "\nDESCRIPTION:\n"
        for line in command.long.strip("\n\t ").split("\n"):
            text += f"\t{line}\n"
    local = command.local_specs(with_help_flag)
    if local:
        text += "\nOPTIONS:\n" + "".join(spec.usage_line() for spec in local)
    inherited = command.inherited_specs()
    if inherited:
        text += "\nGLOBAL OPTIONS:\n" + "".join(spec.usage_line() for spec in inherited)
    return tabwrite(text + "\n")


def _relative_name(command: Command, start: Command) -> str:
    parts = [command.name]
    node = command
    while node.parent is not None and node.parent.name != start.name:
        node = node.parent
        parts.insert(0, node.name)
    return " ".join(parts)


def _all_subcommands(command: Command) -> list[Command]:
    out: list[Command] = []
    for child in command.children:
        out.append(child)
        out.extend(_all_subcommands(child))
    return out


def prepare(root: Command, args: list[str]) -> Invocation | Command:
    """Parse ``args``: an Invocation to run, or the Command whose usage should be printed.

    Raises CommandLineError ("find" or "flags") for cobra's two error paths.
    """
    command, rest = find(root, args)
    flags = command.flag_set()
    try:
        positional = flags.parse(rest)
    except FlagError as err:
        raise CommandLineError("flags", str(err), command) from None
    if flags.get("help") or not command.runnable:
        return command
    return Invocation(command, flags, positional, rest, list(args))
