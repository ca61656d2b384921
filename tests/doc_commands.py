"""Find, classify and run the commands of the docs (for tests/test_documented_commands.py).

A *command* is a line (with its ``\\`` continuations, heredoc or ``for ... done`` body) of a
```` ```bash ```` block of README.md, docs/**/*.md or slurm/*.md. Each is parsed from the text as
written: leading ``VAR=value`` assignments and scheduling wrappers (``nice -n 10``, ``taskset -c 1``,
``nohup``, ``time``) are peeled off, and what remains is classified by its program. A command the
test does not know, a placeholder without a mapping, or a command in another kind of code block,
fails the discovery test with what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_GLOBS = ("README.md", "docs/**/*.md", "slurm/*.md", "scripts/*.md")
SHELL_LANGS = ("bash", "sh", "shell", "console")

# -- what is not run here, and why (an explicit list: a new entry needs a reason a reviewer can check) ----------
NOT_RUN = {
    "make test": "the test suite itself; this test is part of it",
    "make install": "creates .venv: done by `make test` in CI before this test runs",
    "python -m venv .venv": "installation by hand (README): CI installs the same pins with `make install`, and "
                            "tests/test_wheel.py installs whylearn into a fresh virtual environment",
    "pip install": "installation by hand (README): as above; no test downloads torch again",
    "sudo bash slurm/local_cluster.sh": "starts or stops this machine's SLURM cluster (root, apt): .ci/run starts "
                                        "it before the tests; stopping it would take it from the scale-out tests",
    "python train.py config/train_shakespeare_char.py": "nanoGPT's own train.py, run in a clone of "
                                                        "github.com/karpathy/nanoGPT (the reference, not whylearn)",
    "wandb": "W&B's own CLI (login, sync, sweep, agent) needs a W&B account and its server; this machine is offline "
             "(tests/test_wandb.py reads the offline runs whylearn writes)",
}
# programs that only look at or prepare things; run as written by bash in the block's folder
SHELL_UTILITIES = {"mkdir", "cat", "cp", "ls", "echo", "touch", "sinfo", "squeue", "head", "tail", "printf"}
WRAPPERS = {"nice": ("-n",), "taskset": ("-c",), "nohup": (), "time": ()}

# placeholders: what each stands for. "glob": a folder an earlier command of the same block made (the newest
# match of the path with the placeholder as `*`); a string: that value.
PLACEHOLDERS = {
    "<time>": "glob",             # outputs/<task>/runs/<time>: the run folder's timestamp
    "<date>": "glob",             # outputs/<task>/multiruns/<date>: the sweep folder's timestamp
    "<name>": "xor_perceptron",   # experiment=<name> (docs/experiments.md, the classic machines): any experiment
    "...": "mnist1d_mlp",         # experiment=... (slurm/README.md): any experiment
}
PLACEHOLDER_RE = re.compile(r"<[A-Za-z][^<>]*>|(?<![.\w])\.\.\.(?![.\w])")

# how the test shortens a run: appended overrides only
SHORT = ("debug=fast_dev_run",)          # a run nothing later in its block reads
CHAIN_STEPS = 20                          # trainer.max_steps of a run that a later command reads (keeps task_name)
# runs read by a later command that need more steps than CHAIN_STEPS for what that command reads
CHAIN_STEPS_BY_EXPERIMENT = {
    "omnigrok_mnist": 100,        # validation every 100 steps: the figure needs one
    "shakespeare_char_cpu": 120,  # more than its 100 warm-up steps (fewer is refused: warmup_steps > total_steps)
}


@dataclasses.dataclass
class Command:
    where: str               # "docs/experiments.md:123"
    block: str               # "docs/experiments.md:120" (the block's first line)
    text: str                # as written: continuations joined, comment dropped, heredoc body included
    env: dict                # leading VAR=value
    argv: list[str]          # program and arguments (after env and wrappers); [] for shell forms
    kind: str                # train, eval, analyze, sample, landscape, script, make, sbatch, slurm_script,
                             # shell, python_block, not_run
    reason: str = ""         # why not run (not_run)
    placeholders: tuple = ()
    cwd: str | None = None   # where a recorded call ran (a script may cd)

    @property
    def multirun(self) -> bool:
        return self.kind == "train" and ("-m" in self.argv[1:] or "--multirun" in self.argv[1:])

    def override(self, key: str) -> str | None:
        """The value of ``key=...`` in the command's arguments (the last one wins, as in Hydra)."""
        vals = [a.split("=", 1)[1] for a in self.argv[1:] if a.split("=", 1)[0].lstrip("+~") == key and "=" in a]
        return vals[-1] if vals else None


@dataclasses.dataclass
class Problem:
    where: str
    message: str


# -- finding the blocks ----------------------------------------------------------------------------------------
def doc_files(root: Path = ROOT) -> list[Path]:
    files = []
    for pattern in DOC_GLOBS:
        files += sorted(p for p in root.glob(pattern) if p.is_file())
    return list(dict.fromkeys(files))


def code_blocks(path: Path, root: Path = ROOT):
    """(line, kind, info, content) of every code block: kind 'fence' or 'indented'."""
    from markdown_it import MarkdownIt

    rel = path.relative_to(root).as_posix()
    for tok in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
        if tok.type in ("fence", "code_block"):
            yield f"{rel}:{tok.map[0] + 1}", tok.type, tok.info.strip().split(" ")[0].lower(), tok.content


def looks_like_commands(content: str) -> str | None:
    """The first line of ``content`` that starts like a shell command of this project, or None."""
    starts = ("whylearn-", "python ", "python3 ", "make ", "sbatch ", "srun ", "bash ", "pip ", "nice ", "taskset ",
              "PYTHONPATH=", "WANDB_MODE=", "sudo ", "for ", "mkdir ", "cd ")
    for line in content.splitlines():
        s = line.strip()
        if s.startswith(starts) or re.match(r"(\./)?scripts/[\w-]+\.sh\b", s):
            return s
    return None


# -- splitting a block into commands ---------------------------------------------------------------------------
def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a # at the start of a word, outside quotes)."""
    quote, prev = None, " "
    for i, c in enumerate(line):
        if quote:
            if c == quote and not (quote == '"' and prev == "\\"):
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and prev.isspace():
            return line[:i].rstrip()
        prev = c
    return line.rstrip()


def console_commands(content: str) -> str:
    """The commands of a ```console block: the lines after a ``$ `` prompt (and their continuations), the
    output lines blanked (line numbers kept)."""
    out, cont = [], False
    for line in content.splitlines():
        if line.startswith("$ ") or cont:
            out.append(line[2:] if line.startswith("$ ") and not cont else line)
            cont = strip_comment(line).endswith("\\")
        else:
            out.append("")
    return "\n".join(out)


def split_block(content: str, first_line: int) -> list[tuple[int, str]]:
    """(line number, command text) of each command of a shell block."""
    lines = content.splitlines()
    out, i = [], 0
    while i < len(lines):
        start = i
        s = lines[i].strip()
        if not s or s.startswith("#"):
            i += 1
            continue
        cmd = strip_comment(lines[i])
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd[:-1].rstrip() + " " + strip_comment(lines[i]).strip()
        heredoc = re.search(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1", cmd)
        if heredoc:
            body = []
            while i + 1 < len(lines) and lines[i + 1].strip() != heredoc.group(2):
                i += 1
                body.append(lines[i])
            i += 1  # the terminator
            cmd = cmd + "\n" + "\n".join(body) + "\n" + heredoc.group(2)
        elif re.match(r"(for|while|until)\b", cmd.strip()) and not re.search(r"\bdone\s*$", cmd):
            while i + 1 < len(lines):
                i += 1
                cmd += "\n" + strip_comment(lines[i])
                if re.search(r"\bdone\s*$", cmd):
                    break
        out.append((first_line + 1 + start, cmd.strip()))
        i += 1
    return out


def shell_syntax(text: str) -> bool:
    """True if ``text`` needs a shell: operators, redirections, expansions, globs, loops, heredocs."""
    if "\n" in text or re.match(r"(for|while|until|if)\b", text):
        return True
    quote = None
    for c in text:
        if quote:
            if c == quote:
                quote = None
            elif quote == '"' and c in "$`":
                return True
        elif c in "'\"":
            quote = c
        elif c in ";&|<>()$`*?":
            return True
    return False


def peel(tokens: list[str]) -> tuple[dict, list[str]]:
    """Leading ``VAR=value`` assignments and scheduling wrappers off ``tokens``: (env, the rest)."""
    env = {}
    while tokens and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
        k, v = tokens[0].split("=", 1)
        env[k] = v
        tokens = tokens[1:]
    while tokens and tokens[0] in WRAPPERS:
        opts = WRAPPERS[tokens[0]]
        tokens = tokens[1:]
        while tokens and tokens[0].startswith("-"):
            tokens = tokens[2:] if tokens[0] in opts else tokens[1:]
    return env, tokens


SCRIPT_SH = r"(\./)?scripts/[\w-]+\.sh$"
ENTRY_POINTS = {"whylearn-train": "train", "whylearn-eval": "eval", "whylearn-analyze": "analyze",
                "whylearn-sample": "sample", "whylearn-landscape": "landscape"}
MODULES = {"whylearn.cli.train": "train", "whylearn.cli.eval": "eval", "whylearn.cli.analyze": "analyze",
           "whylearn.cli.sample": "sample", "whylearn.cli.landscape": "landscape"}


def classify_argv(argv: list[str]) -> tuple[str, list[str]]:
    """(kind, argv normalized to ``[entry point, args...]``) of a peeled command, or ("unknown", argv)."""
    if not argv:
        return "unknown", argv
    prog = argv[0]
    if prog in ENTRY_POINTS:
        return ENTRY_POINTS[prog], argv
    if prog in ("python", "python3") and len(argv) >= 3 and argv[1] == "-m" and argv[2] in MODULES:
        kind = MODULES[argv[2]]
        return kind, [next(k for k, v in ENTRY_POINTS.items() if v == kind), *argv[3:]]
    if prog in ("python", "python3") and len(argv) >= 2 and re.match(r"scripts/\w+\.py$", argv[1]):
        return "script", argv[1:]
    if prog == "make":
        return "make", argv
    if prog == "sbatch":
        return "sbatch", argv
    if prog == "bash" and len(argv) >= 2 and re.match(r"slurm/\w+\.sh$", argv[1]):
        return "slurm_script", argv[1:]
    if re.match(SCRIPT_SH, prog) or (prog == "bash" and len(argv) >= 2 and re.match(SCRIPT_SH, argv[1])):
        return "shell", argv  # a shell script of scripts/: bash runs it, its whylearn calls recorded and run
    if prog in SHELL_UTILITIES:
        return "shell", argv
    return "unknown", argv


def not_run_reason(env_free_text: str) -> str | None:
    for prefix, reason in NOT_RUN.items():
        if env_free_text == prefix or env_free_text.startswith(prefix + " "):
            return reason
    return None


UNKNOWN_HELP = (
    "the documented-commands test does not know this command form. Make it one of the forms it runs "
    "(whylearn-train/-eval/-analyze/-sample/-landscape or `python -m whylearn.<module>`, `python scripts/<name>.py`, "
    "`make <target>`, `sbatch slurm/<file>`, `bash slurm/<name>.sh`, `scripts/<name>.sh`, a shell line with "
    "for/$()/heredocs around those, or a shell utility like mkdir/cat), or, if it cannot run here, add it to NOT_RUN in "
    "tests/doc_commands.py with the reason."
)


def parse(where: str, block: str, text: str) -> tuple[Command | None, Problem | None]:
    holders = tuple(dict.fromkeys(PLACEHOLDER_RE.findall(text)))
    masked = PLACEHOLDER_RE.sub("PLACEHOLDER", text)
    try:
        tokens = shlex.split(masked.split("\n")[0], comments=False)
    except ValueError:
        tokens = []
    env, rest = peel(tokens)
    reason = not_run_reason(" ".join(rest))
    if reason:
        return Command(where, block, text, env, rest, "not_run", reason, holders), None
    unknown = [p for p in holders if p not in PLACEHOLDERS]
    if unknown:
        return None, Problem(where, f"`{text}`: placeholder(s) {unknown} have no substitution. Use one of "
                                    f"{list(PLACEHOLDERS)} (see PLACEHOLDERS in tests/doc_commands.py) or add yours there.")
    if shell_syntax(masked):
        return Command(where, block, text, {}, [], "shell", placeholders=holders), None
    try:
        env, rest = peel(shlex.split(text, comments=False))
    except ValueError as e:
        return None, Problem(where, f"`{text}` is not valid shell ({e})")
    kind, argv = classify_argv(rest)
    if kind == "unknown":
        return None, Problem(where, f"`{text}`: {UNKNOWN_HELP}")
    return Command(where, block, text, env, argv, kind, placeholders=holders), None


def discover(root: Path = ROOT) -> tuple[dict[str, list[Command]], list[Problem]]:
    """{block: [commands]} of every shell block of the docs, and the problems found."""
    blocks: dict[str, list[Command]] = {}
    problems: list[Problem] = []
    for path in doc_files(root):
        for where, kind, info, content in code_blocks(path, root):
            if kind == "fence" and info in SHELL_LANGS:
                line = int(where.rsplit(":", 1)[1])
                if info == "console":
                    content = console_commands(content)
                cmds = []
                for n, text in split_block(content, line):
                    cmd, problem = parse(f"{where.rsplit(':', 1)[0]}:{n}", where, text)
                    if problem:
                        problems.append(problem)
                    else:
                        cmds.append(cmd)
                if cmds:
                    blocks[where] = cmds
            elif kind == "fence" and info == "python":
                blocks[where] = [Command(where, where, content, {}, [], "python_block")]
            else:
                first = looks_like_commands(content)
                if first:
                    what = "an indented code block" if kind == "indented" else f"a ```{info or ''} block"
                    problems.append(Problem(where, f"{what} holds what looks like a command (`{first}`): put commands "
                                                   f"in a ```bash block, where tests/test_documented_commands.py runs "
                                                   f"them (or use ```text for output that only looks like one)"))
    return blocks, problems


# -- placeholders ----------------------------------------------------------------------------------------------
def substitute(text: str, cwd: Path, roots: list[Path]) -> str:
    """``text`` with its placeholders replaced: a value placeholder by its value, a path holding a glob
    placeholder (``<time>``, ``<date>``) by the newest folder or file an earlier command made that matches it
    (looked up under ``cwd``, then under ``roots``: WHYLEARN_ROOT, where runs go when it is set).

    Raises:
        LookupError: nothing matches (the command that makes it must come earlier in the same block).
    """
    def path(match: re.Match) -> str:
        token = match.group(0)
        parts = token.split("/")
        k = next(i for i, part in enumerate(parts) if PLACEHOLDER_RE.search(part))
        pattern, rest = "/".join(parts[: k + 1]), parts[k + 1:]  # the folder a placeholder names; then the rest as written
        pattern = PLACEHOLDER_RE.sub("*", pattern)
        found = [m for base in [cwd, *roots] for m in base.glob(pattern)]
        if not found:
            raise LookupError(f"nothing matches {token!r} ({pattern!r} under {[str(b) for b in [cwd, *roots]]}): the "
                              f"command that makes it must come earlier in the same ```bash block (each block runs "
                              f"in a fresh folder)")
        newest = max(found, key=lambda m: m.stat().st_mtime)
        folder = str(newest.relative_to(cwd)) if newest.is_relative_to(cwd) else str(newest)
        return "/".join([folder, *rest])

    for p, v in PLACEHOLDERS.items():
        if v != "glob":
            text = re.sub(r"(?<![.\w])" + re.escape(p) + r"(?![.\w])", v, text)
    # a path with a glob placeholder: the run of non-space, non-quote, non-= characters around it
    return re.sub(r"[^\s'\"=]*(?:<time>|<date>)[^\s'\"]*", path, text)


# -- shims: what a shell line runs -------------------------------------------------------------------------------
SHIM = textwrap.dedent('''\
    #!{python}
    """A stand-in for whylearn's entry points (and python) on PATH, for tests/test_documented_commands.py.

    DOCTEST_MODE=record: write the call to $DOCTEST_RECORD and exit 0 (nothing runs).
    DOCTEST_MODE=append: run it, with the overrides in $DOCTEST_APPEND (JSON) appended to whylearn-train's.
    Other python calls (python -c ...) run as they are.
    """
    import json, os, sys
    REAL = {real!r}
    MODULES = {modules!r}
    name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
    if name.startswith("python"):
        if args[:1] == ["-m"] and len(args) > 1 and args[1] in MODULES.values():
            module, args = args[1], args[2:]
        elif args[:1] and args[0].startswith("scripts/"):
            module = None
        else:
            os.execv(REAL, [REAL, *args])
    else:
        module = MODULES[name]
    if os.environ.get("DOCTEST_MODE") == "record":
        base = json.loads(os.environ["DOCTEST_BASE_ENV"])
        with open(os.environ["DOCTEST_RECORD"], "a") as f:
            f.write(json.dumps({{"module": module, "args": args, "cwd": os.getcwd(),
                                "env": {{k: v for k, v in os.environ.items() if base.get(k) != v
                                         and not k.startswith("DOCTEST_")}}}}) + "\\n")
        sys.exit(0)
    if module == "whylearn.cli.train":
        args = [*args, *json.loads(os.environ.get("DOCTEST_APPEND", "[]"))]
    os.execv(REAL, [REAL, *(["-m", module] if module else []), *args])
''')


def write_shims(folder: Path) -> Path:
    """The shims (whylearn-*, python, python3) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    modules = {prog: mod for mod, kind in MODULES.items() for prog, k in ENTRY_POINTS.items() if k == kind}
    for name in (*ENTRY_POINTS, "python", "python3"):
        p = folder / name
        p.write_text(SHIM.format(python=sys.executable, real=sys.executable, modules=modules))
        p.chmod(0o755)
    return folder


def shim_env(env: dict, shims: Path) -> dict:
    return {**env, "PATH": f"{shims}{os.pathsep}{env.get('PATH', os.environ['PATH'])}",
            "WHYLEARN_PYTHON": str(shims / "python"), "WHYLEARN_TRAIN": str(shims / "whylearn-train")}


def record(text: str, cwd: Path, env: dict, shims: Path, where: str = "") -> list[Command]:
    """Run ``text`` with bash, the shims first on PATH in record mode: the whylearn calls it makes, as commands.

    Everything else in the line (mkdir, cat, a heredoc, python -c) runs for real.

    Raises:
        RuntimeError: bash failed (its output in the message).
    """
    import subprocess

    rec = cwd.parent / f"record-{os.getpid()}.jsonl"
    rec.unlink(missing_ok=True)
    full = shim_env(env, shims)
    full.update(DOCTEST_MODE="record", DOCTEST_RECORD=str(rec), DOCTEST_BASE_ENV=json.dumps(full))
    r = subprocess.run(["bash", "-c", text], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"bash failed ({r.returncode}) on: {text}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    calls = [json.loads(line) for line in rec.read_text().splitlines()] if rec.is_file() else []
    rec.unlink(missing_ok=True)
    out = []
    for c in calls:
        argv = ["python", "-m", c["module"], *c["args"]] if c["module"] else ["python", *c["args"]]
        kind, argv = classify_argv(argv)
        env_c = {k: v for k, v in c["env"].items() if k not in ("_", "SHLVL", "PWD", "OLDPWD")}
        out.append(Command(where, "", shlex.join(argv), env_c, argv, kind, cwd=c["cwd"]))
    return out
