"""The README's test command installs what the tests run. Every program the suite starts — a literal first argument
of subprocess.run/Popen/…, asyncio.create_subprocess_exec, os.exec*, or a name asked of shutil.which, found with
`ast` in tests/ and in the src/ and benchmarks/ code the tests run, and the commands of the scripts/ the tests run —
must come from a Debian package that `scripts/bootstrap --test` installs, from a package every Debian has, or be on
an explicit list of programs that are not Debian's to install, each with its reason. A program named no other way
(built at run time) is on an explicit list too, so a new one fails here until someone says where it comes from.

`.ci/run` installs nothing of its own: a package that only CI installed would keep CI green while the README's
command fails on a fresh machine (issue 28)."""

from __future__ import annotations

import ast
import re
import shlex
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "src", "benchmarks")  # the tests, and the code they run in-process or as child processes

# Program → the Debian package that ships it, for every program the suite runs that `scripts/bootstrap --test` must
# install. A program found and missing here fails the test: add it here and to the packages in scripts/bootstrap.
PACKAGE_OF = {
    "redis-server": "redis-server",
    "redis-sentinel": "redis-sentinel",
    "influxd": "influxdb",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "systemd-analyze": "systemd",
    "openssl": "openssl",
    "git": "git",
    # The stack test and the bare-Debian bootstrap test: the packages are installed like any other; where no Docker
    # engine runs (a container, a machine without systemd to start docker.io's), those two tests skip, saying so.
    "docker": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}

# Programs of packages every Debian 12 has (Priority: required, so in a `debootstrap --variant=minbase` too): nothing
# to install. Shell builtins and keywords are not programs at all.
REQUIRED = {
    "mount": "mount", "umount": "mount", "taskset": "util-linux",
    "bash": "bash", "sh": "dash", "awk": "mawk", "grep": "grep", "sed": "sed", "tar": "tar", "find": "findutils",
    "xargs": "findutils", "dpkg-query": "dpkg", "apt-get": "apt",
    **{name: "coreutils" for name in ("cat", "chmod", "cut", "head", "mkdir", "mktemp", "rm", "sha256sum", "sort",
                                      "tail", "touch", "tr", "id", "env", "nohup", "sleep", "seq", "dirname")},
}
BASH_BUILTINS = {
    ".", ":", "[", "[[", "alias", "break", "builtin", "case", "cd", "command", "continue", "declare", "do", "done",
    "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fi", "for", "function", "getopts",
    "hash", "if", "in", "kill", "let", "local", "printf", "pushd", "popd", "pwd", "read", "readonly", "return",
    "select",
    "set", "shift", "shopt", "source", "test", "then", "time", "trap", "true", "type", "unset", "until", "wait",
    "while", "{", "}", "!",
}

# Programs found by name that are not Debian's to install, and why.
NOT_DEBIAN = {
    "python": "the virtualenv's interpreter (sys.executable), made by scripts/bootstrap from Debian's python3",
}

# Programs named at run time: (a file, or a folder ending in "/" for every one in it; the program's expression as
# `ast.unparse` writes it, or "*" for any) → why it is not Debian's to install. An entry matching no call fails.
BUILT_AT_RUN_TIME: dict[tuple[str, str], str] = {
    ("src/homeiq/local/processes.py", "str(executable)"):
        "one of this project's console scripts in the virtualenv (Path(sys.executable).parent / script), installed "
        "by scripts/bootstrap's pip",
    ("tests/test_stack.py", "self.command"):
        "scripts/stack-up, this repository's own script (the README's command), named by the module constant "
        "STACK_UP of tests/test_stack.py or tests/test_stack_failover.py; the docker-compose and docker it runs are "
        "found by name in the same file",
    ("tests/test_two_collectors_edges.py", "command"):
        "the collector's console script from the virtualenv (installed by scripts/bootstrap's pip); as root under "
        "`unshare -m sh -c 'mount ...'` (util-linux and mount: Essential, in every Debian) to mount its spool "
        "directory read-only",
    ("tests/realha/", "*"):
        "the real-HA lane runs Home Assistant's own programs: a pythonX.Y found on PATH or in pyenv (Debian 12's "
        "python3.11 serves the 3.11 release; 3.13 is pyenv's), and the interpreter, pip and hass of the virtualenv "
        "it makes for each release. A release whose Python is missing skips, saying so (and fails under "
        "HOMEIQ_REALHA_REQUIRED=1, as .ci/run sets)",
}


def built_reason(file: str, expression: str) -> tuple[str, str] | None:
    """The BUILT_AT_RUN_TIME key that accounts for this call, if any."""
    for key in ((file, expression), (file, "*"), *((folder, "*") for folder, _ in BUILT_AT_RUN_TIME
                                                  if folder.endswith("/") and file.startswith(folder))):
        if key in BUILT_AT_RUN_TIME:
            return key
    return None


SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output"}
RUNNERS = {
    **{("subprocess", name): "argv" for name in SUBPROCESS},
    ("asyncio", "create_subprocess_exec"): "program",
    ("shutil", "which"): "program",
    **{("os", name): "program" for name in ("execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp",
                                           "execlpe", "posix_spawn", "posix_spawnp")},
    # A command line for a shell: not checkable, so such a call fails the test (use an argument list).
    ("os", "system"): "shell", ("os", "popen"): "shell", ("asyncio", "create_subprocess_shell"): "shell",
    ("subprocess", "getoutput"): "shell", ("subprocess", "getstatusoutput"): "shell",
}


@dataclass(frozen=True)
class Use:
    """A program the suite runs, and where."""

    program: str  # a name; "script:<path>" (one of scripts/), "venv:<name>", "built:<file>:<expression>", "shell:…"
    where: str


def project_scripts() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.MULTILINE))


class Module:
    """One Python file: its calls that start programs, resolved as far as the source says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rel = path.relative_to(ROOT).as_posix()
        self.tree = ast.parse(path.read_text(), str(path))
        self.parent: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parent[child] = node
        self.imported: dict[str, tuple[str, str]] = {}  # `from subprocess import run as r` → r: (subprocess, run)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.imported[alias.asname or alias.name] = (node.module, alias.name)
        self.calls = [node for node in ast.walk(self.tree) if isinstance(node, ast.Call)]
        self.wrappers: dict[str, tuple[str, int, str]] = {}  # how it is called → (that, program's position, mode)
        while True:  # a wrapper of a wrapper too
            before = len(self.wrappers)
            for call in self.calls:
                found = self.program_of(call)
                wrapped = self.wrapper(found[0], call, found[1]) if found and found[1] != "shell" else None
                if wrapped:
                    self.wrappers[wrapped[0]] = wrapped
            if len(self.wrappers) == before:
                break

    def runner(self, node: ast.expr) -> str | None:
        """The kind of argument a reference to a program-starting function takes ("argv", "program", "shell")."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return RUNNERS.get((node.value.id, node.attr))
        if isinstance(node, ast.Name) and node.id in self.imported:
            return RUNNERS.get(self.imported[node.id])
        return None

    def function_of(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        while node in self.parent:
            node = self.parent[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node
        return None

    def assigned(self, name: str, scope: ast.AST) -> ast.expr | None:
        """The value of `name = …` when `scope` (its own statements, not nested functions') assigns it exactly once."""
        values = [node.value for node in ast.walk(scope) if isinstance(node, ast.Assign) and len(node.targets) == 1
                  and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name
                  and (self.function_of(node) is scope or (scope is self.tree and self.function_of(node) is None))]
        return values[0] if len(values) == 1 else None

    def resolve(self, node: ast.expr, at: ast.AST, depth: int = 0) -> str | None:
        """What program `node` names: a name, `script:`/`venv:` for the project's own, None when not said here."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return PurePosixPath(node.value).name if "/" in node.value else node.value
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("str", "os.fspath", "Path") \
                and len(node.args) == 1:
            return self.resolve(node.args[0], at, depth)
        if isinstance(node, ast.Call) and self.called(node) in self.wrappers:
            _, position, mode = self.wrappers[str(self.called(node))]  # _binary("influxd", ...): that program's path
            if mode == "program" and len(node.args) > position:
                return self.resolve(node.args[position], at, depth)
        if ast.unparse(node) == "sys.executable":
            return "python"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and isinstance(node.right.value, str):
            left = ast.unparse(node.left)
            if "sys.executable" in left:  # Path(sys.executable).parent / "replayer": the virtualenv's console script
                return f"venv:{node.right.value}"
            if re.fullmatch(r"ROOT / 'scripts'", left):
                return f"script:scripts/{node.right.value}"
            return None
        if isinstance(node, ast.Name) and depth < 3:
            function = self.function_of(at)
            for scope in (function, self.tree):
                value = self.assigned(node.id, scope) if scope is not None else None
                if value is not None:
                    return self.resolve(value, value, depth + 1)
        return None

    def wrapper(self, program: ast.expr, at: ast.AST, mode: str) -> tuple[str, int, str] | None:
        """When `program` is a parameter of the function around `at` (a wrapper: `def run(*args)` passing args to
        subprocess.run, `def _binary(name, ...)` asking shutil.which for name, a method `_spawn(self, argv)`), that
        function's name, the position at its callers of the argument that says the program, and how it says it
        ("program": the argument is the program, "argv": a list whose first item is, "spread": *args)."""
        function = self.function_of(at)
        if function is None or not isinstance(program, ast.Name):
            return None
        positional = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
        key = function.name  # called as name(...)
        owner = self.parent.get(function)
        if isinstance(owner, ast.ClassDef) and positional[:1] in (["self"], ["cls"]):
            positional = positional[1:]
            key = owner.name if function.name == "__init__" else f".{function.name}"  # Class(...), obj.name(...)
        if mode == "argv" and function.args.vararg and function.args.vararg.arg == program.id:
            return key, len(positional), "spread"
        if program.id in positional:
            return key, positional.index(program.id), mode
        return None

    def program_of(self, call: ast.Call) -> tuple[ast.expr, str] | None:
        """The program argument of a call that starts one (or a wrapper's), and its mode, as in `wrapper`."""
        kind, argument = self.runner(call.func), call.args[0] if call.args else None
        for index, arg in enumerate(call.args[:-1]):  # asyncio.to_thread(subprocess.run, [...]), run_in_executor
            if self.runner(arg):
                kind, argument = self.runner(arg), call.args[index + 1]
        called = self.called(call)
        if kind is None and called in self.wrappers:
            _, position, kind = self.wrappers[called]
            argument = call.args[position] if len(call.args) > position else None
            if kind == "spread":
                kind = "program"
        if kind is None or argument is None:
            return None
        if kind == "shell" or any(k.arg == "shell"
                                  and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                                  for k in call.keywords):
            return argument, "shell"
        if kind == "argv" and isinstance(argument, ast.List | ast.Tuple):
            return (argument.elts[0], "program") if argument.elts else None
        return argument, kind

    @staticmethod
    def called(call: ast.Call) -> str | None:
        """How a wrapper would be named for this call: `name`, or `.name` for a method."""
        if isinstance(call.func, ast.Name):
            return call.func.id
        return f".{call.func.attr}" if isinstance(call.func, ast.Attribute) else None

    def uses(self) -> list[Use]:
        """Every program this file starts (or asks shutil.which for), with its line."""
        found: list[Use] = []
        for call in self.calls:
            program_mode = self.program_of(call)
            if program_mode is None:
                continue
            program, mode = program_mode
            where = f"{self.rel}:{call.lineno}"
            wrapped = mode != "shell" and self.wrapper(program, call, mode)
            if wrapped:
                if not any(self.called(other) == wrapped[0] for other in self.calls):  # its callers are elsewhere
                    found.append(Use(f"built:{self.rel}:{ast.unparse(program)}", where))
            elif mode == "shell":
                found.append(Use(f"shell:{ast.unparse(program)}", where))
            elif mode == "argv":  # an argv list in a variable: its program is not said here
                found.append(Use(f"built:{self.rel}:{ast.unparse(program)}", where))
            else:
                name = self.resolve(program, call)
                found.append(Use(name or f"built:{self.rel}:{ast.unparse(program)}", where))
        return found


def bash_commands(text: str) -> set[str]:
    """The programs a bash script runs: the words in command position (after a newline, `;`, `|`, `&`, `(`, `)`,
    `$(` also inside double quotes, and `if`/`then`/`do`/…, past assignments, redirections, `!`, and `sudo`, `exec`,
    `nohup`, `env`, `xargs` with their options; `command -v X` asks for X), less builtins and the script's functions.
    Quotes, comments, `${…}` and here-documents are read as bash reads them; a program in a variable is not seen."""
    functions = set(re.findall(r"^\s*([A-Za-z_][\w-]*)\s*\(\)", text, re.MULTILINE))
    commands: set[str] = set()
    frames: list[tuple[list[str], list[str]]] = [([], [])]  # (words, the word being read) per `$(` level
    quoted: list[bool] = [False]  # per level: inside double quotes
    testing: list[bool] = [False]  # per level: inside [[ … ]]
    heredocs: list[str] = []
    i = 0

    def end_word() -> None:
        words, word = frames[-1]
        if word:
            words.append("".join(word))
            word.clear()

    def end_command() -> None:
        end_word()
        program = command_word(frames[-1][0])
        if program is not None:
            commands.add(program)
        frames[-1][0].clear()

    while i < len(text):
        c, rest, word = text[i], text[i:], frames[-1][1]
        if rest.startswith("$("):  # a command substitution, in double quotes or not
            word.append("$()")
            frames.append(([], []))
            quoted.append(False)
            testing.append(False)
            i += 2
        elif rest.startswith("${"):
            word.append("${}")
            i = text.index("}", i) + 1
        elif rest.startswith("\\\n"):  # a continued line
            end_word()
            i += 2
        elif c == "\\":
            word.append(text[i:i + 2])
            i += 2
        elif quoted[-1]:
            quoted[-1] = c != '"'
            i += 1
        elif c == '"':
            word.append('""')
            quoted[-1] = True
            i += 1
        elif c == "'":
            close = text.index("'", i + 1)
            word.append(text[i:close + 1])
            i = close + 1
        elif not word and re.match(r"\[\[\s", rest):  # a conditional expression: its || and && are not lists
            frames[-1][0].append("[[")
            testing[-1] = True
            i += 2
        elif testing[-1] and rest.startswith("]]"):
            testing[-1] = False
            i += 2
        elif testing[-1] and c in "|&<>":
            end_word()
            i += 1
        elif c == "(" and "".join(word).endswith("="):  # an array assignment
            word.append("()")
            i = text.index(")", i) + 1
        elif c == "#" and not word:
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif rest.startswith("<<<"):
            end_word()
            word.append("<<<")
            i += 3
        elif rest.startswith("<<"):
            match = re.match(r"<<-?\s*['\"]?(\w+)['\"]?", rest)
            assert match, rest[:40]
            heredocs.append(match.group(1))
            end_word()
            i += match.end()
        elif c == "\n" and heredocs:
            end_command()
            lines = text[i + 1:].split("\n")
            last = next(n for n, line in enumerate(lines) if line.strip() == heredocs[0])
            i += 1 + sum(len(line) + 1 for line in lines[:last + 1])
            heredocs.pop(0)
        elif c == ")" and len(frames) > 1:
            end_command()
            frames.pop()
            quoted.pop()
            testing.pop()
            i += 1
        elif c == "&" and word and word[-1][-1:] in "<>":  # 2>&1
            word.append(c)
            i += 1
        elif c in "\n;|&()`":
            end_command()
            i += 1
        elif c in " \t":
            end_word()
            i += 1
        else:
            word.append(c)
            i += 1
    end_command()
    return {c for c in commands if c not in functions and c not in BASH_BUILTINS}


def command_word(words: list[str]) -> str | None:
    """The program of one simple command (its words as written), or None."""
    skip_next = False
    rest: list[str] = []
    for w in words:  # redirections and their targets go
        if skip_next:
            skip_next = False
        elif re.fullmatch(r"\d*(<<<|<<|<|>>|>|&>|>&)", w):
            skip_next = True
        elif not re.match(r"\d*(<|>|&>)", w):
            rest.append(w)
    while rest:
        first = rest[0]
        if first.startswith(("$", '"')):  # a command in a variable: none to see, unless it is $sudo (empty as root)
            rest.pop(0)
            if not rest or rest[0].startswith("-"):
                return None
        elif re.fullmatch(r"[A-Za-z_]\w*(\[[^]]*\])?\+?=.*", first) or first in (
                "!", "time", "if", "then", "do", "else", "elif", "while", "until", "{", "}"):
            rest.pop(0)  # assignments, keywords
        elif first in ("sudo", "exec", "nohup", "env", "xargs"):
            rest.pop(0)
            while rest and (rest[0].startswith("-") or re.fullmatch(r"[A-Za-z_]\w*=.*", rest[0])):
                rest.pop(0)
        elif rest[:2] == ["command", "-v"]:
            return rest[2] if len(rest) > 2 else None
        else:
            break
    if not rest or rest[0] in ("for", "case", "[[", "[", "done", "fi", "esac", "function"):
        return None
    first = rest[0]
    if "/" not in first:
        return first
    if first.startswith(".venv/bin/"):  # the virtualenv's: its python, or a console script
        name = first.removeprefix(".venv/bin/")
        return "python" if name.startswith("python") else f"venv:{name}"
    return f"script:{first}" if not first.startswith("/") and (ROOT / first).is_file() else PurePosixPath(first).name


def scanned_uses() -> list[Use]:
    uses = [use for top in SCANNED for path in sorted((ROOT / top).rglob("*.py")) for use in Module(path).uses()]
    scanned: set[str] = set()
    while scripts := {u.program.removeprefix("script:") for u in uses if u.program.startswith("script:")} - scanned:
        for script in sorted(scripts):  # and what those scripts run, in turn
            uses += [Use(command, script) for command in bash_commands((ROOT / script).read_text())]
            scanned.add(script)
    return uses


def bootstrap_test_packages() -> list[str]:
    """The Debian packages `scripts/bootstrap --test` installs: its `packages=(…)` and the --test branch's
    `packages+=(…)`."""
    text = (ROOT / "scripts" / "bootstrap").read_text()
    base = re.search(r"^packages=\(([^)]*)\)", text, re.MULTILINE)
    branch = re.search(r'^if \[\[ "\$\{1:-\}" == "--test" \]\]; then\n(.*?)^fi$', text, re.MULTILINE | re.DOTALL)
    assert base and branch, "scripts/bootstrap: no packages=(…) or no --test branch where this test looks"
    extra = re.search(r"^\s*packages\+=\(([^)]*)\)", branch.group(1), re.MULTILINE)
    assert extra, "scripts/bootstrap: no packages+=(…) in the --test branch"
    words = [w for part in (base.group(1), extra.group(1)) for line in part.splitlines()
             for w in shlex.split(line, comments=True)]
    assert words and all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w) for w in words), words
    return words


def where(uses: list[Use]) -> dict[str, list[str]]:
    places: dict[str, list[str]] = defaultdict(list)
    for use in uses:
        places[use.program].append(use.where)
    return places


def test_the_scan_finds_what_the_suite_is_known_to_run() -> None:
    """The scanner itself: it must see the programs this suite is known to start, each by a different path (a
    literal argv, a wrapper's argument, shutil.which, a which-wrapper, create_subprocess_exec, a script's command)."""
    places = where(scanned_uses())
    assert any(w.startswith("tests/test_setup.py:") for w in places["systemd-analyze"])  # subprocess.run([...])
    assert any(w.startswith("tests/test_ops.py:") for w in places["promtool"])  # run("promtool", ...)
    assert any(w.startswith("tests/test_ops.py:") for w in places["amtool"])
    assert any(w.startswith("tests/helpers.py:") for w in places["openssl"])  # ["openssl", *args] in make_certs
    assert any(w.startswith("src/homeiq/local/services.py:") for w in places["influxd"])  # _binary("influxd", ...)
    assert any(w.startswith("tests/test_stack.py:") for w in places["docker-compose"])  # shutil.which(...)
    assert any(w.startswith("tests/test_replayer_cli.py:") for w in places["venv:replayer"])  # to_thread, exec
    assert places["debootstrap"] == ["scripts/stack-images"]  # a command of a script a test runs
    assert {"prometheus", "prometheus-alertmanager", "redis-server", "git", "docker", "mount"} <= places.keys()


def test_the_test_command_installs_every_program_the_suite_runs() -> None:
    packages = set(bootstrap_test_packages())
    scripts = project_scripts()
    unknown: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = defaultdict(list)
    built_seen: set[tuple[str, str]] = set()
    for program, places in where(scanned_uses()).items():
        if program.startswith("built:"):
            _, file, expression = program.split(":", 2)
            key = built_reason(file, expression)
            if key is None:
                unknown[program] = places
            else:
                built_seen.add(key)
        elif program.startswith("venv:"):
            if program.removeprefix("venv:") not in scripts:
                unknown[program] = places
        elif program.startswith("script:"):
            assert (ROOT / program.removeprefix("script:")).is_file(), (program, places)
        elif program in PACKAGE_OF:
            if PACKAGE_OF[program] not in packages:
                missing[PACKAGE_OF[program]] += [f"{program} ({', '.join(sorted(set(places)))})"]
        elif program not in REQUIRED and program not in NOT_DEBIAN:
            unknown[program] = places
    assert not missing, ("scripts/bootstrap --test does not install these Debian packages, which tests need: "
                         f"{dict(missing)}")
    assert not unknown, ("programs the tests run that nothing here accounts for: add each to PACKAGE_OF (and its "
                         "package to scripts/bootstrap --test), REQUIRED, NOT_DEBIAN or BUILT_AT_RUN_TIME, with the "
                         f"reason: {unknown}")
    stale = set(BUILT_AT_RUN_TIME) - built_seen
    assert not stale, f"BUILT_AT_RUN_TIME names calls that no longer exist: {stale}"


def test_the_test_command_installs_nothing_no_test_runs() -> None:
    """The --test branch's packages are each there for a program the suite runs (the base list is the pipeline's)."""
    used = {PACKAGE_OF[use.program] for use in scanned_uses() if use.program in PACKAGE_OF}
    base = {"python3", "python3-venv", "redis-server", "influxdb"}
    assert set(bootstrap_test_packages()) - base <= used, set(bootstrap_test_packages()) - base - used


def test_ci_installs_no_package_of_its_own() -> None:
    """What the tests need is installed by the README's command; .ci/run only adds what CI adds (a Docker engine
    started in the background), so CI's green cannot hide a missing install step."""
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in lines if re.search(r"\bapt(-get)?\s+install\b|\bpip\s+install\b", line)]
    assert any(line.strip() == "exec scripts/test" for line in lines)
