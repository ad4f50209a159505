"""Issue 15, conventions users bring: llama-bench-style comma lists (``--prompt-tokens 64,128``,
``--max-new-tokens``, ``--threads``) expand into one run per combination in one ``e3bench run``
(planned by the sweep planner), and ``--repeats N`` makes N records of each configuration (same
config_hash, their own run_id). Bad values: one line naming the flag, exit 2, before any load."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli
from e3bench.cli.run import run_configs
from e3bench.config.validate import ConfigError


def _cfgs(**flags):
    return run_configs(flags, config=None, sets=[], backend_options=[])


def test_comma_lists_make_one_config_per_combination():
    cfgs = _cfgs(prompt_tokens="64,128", threads="1,2", max_new_tokens="16")
    assert [(c.prompt_tokens, c.threads, c.max_new_tokens) for c in cfgs] == [
        (64, 1, 16), (64, 2, 16), (128, 1, 16), (128, 2, 16)]  # fmt: skip
    assert len({c.config_hash() for c in cfgs}) == 4
    assert all(c.tasks == ("arc_easy",) and c.defaulted("tasks") for c in cfgs)  # run's defaults on each
    assert [c.max_new_tokens for c in _cfgs(max_new_tokens="8,8,16")] == [8, 16]  # a repeated value: one run
    (one,) = _cfgs(prompt_tokens="64")
    assert one.prompt_tokens == 64


def test_set_still_wins_over_a_listed_flag():
    cfgs = run_configs({"prompt_tokens": "64,128"}, config=None, sets=["prompt_tokens=32"], backend_options=[])
    assert [c.prompt_tokens for c in cfgs] == [32]


def test_every_bad_list_value_is_one_line_naming_its_flag_and_all_come_at_once():
    with pytest.raises(ConfigError) as ei:
        _cfgs(prompt_tokens="64,x", threads="0,2", meter="nvm")
    assert ei.value.one_lines() == [
        "--prompt-tokens: '64,x' is not a comma list of whole numbers — fix: e.g. --prompt-tokens 64,128",
        "--threads: bad value for 'threads': must be ≥ 1 (got 0); leave it unset for the default — fix: see "
        "`e3bench run --help` for --threads",
        "--meter: unknown meter 'nvm' — fix: did you mean 'nvml'?",
    ]


def test_repeats_below_one_is_one_line_before_any_work(tmp_path):
    res = run_cli("run", "--repeats", "0", "-o", str(tmp_path), timeout=120)
    assert res.returncode == 2 and res.stderr.strip() == "error: --repeats must be ≥ 1 (got 0) — fix: e.g. --repeats 3"
    assert res.stdout == ""


def test_cli_lists_and_repeats_write_one_record_per_run(tiny_models, tmp_path):
    out = tmp_path / "out"
    res = run_cli("run", "-m", str(tiny_models["decoder"]), "--prompt-tokens", "8,12", "--repeats", "2",
                  "--batch-size", "1", "--max-new-tokens", "3", "--min-iters", "2", "--min-seconds", "0",
                  "--warmup-iters", "0", "--meter", "none", "--tasks", "none", "--set", "idle_seconds=0",
                  "-o", str(out), timeout=1200)  # fmt: skip
    assert res.returncode == 0, res.stderr
    recs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    assert sorted(r["config"]["prompt_tokens"] for r in recs) == [8, 8, 12, 12]
    by_hash: dict[str, list[str]] = {}
    for r in recs:
        by_hash.setdefault(r["config_hash"], []).append(r["run_id"])
    assert sorted(len(ids) for ids in by_hash.values()) == [2, 2]  # repeats share the config hash ...
    assert len({r["run_id"] for r in recs}) == 4  # ... and each has its own run id
    for i in range(1, 5):
        assert f"run {i} of 4: prompt_tokens=" in res.stdout
    assert "4 runs (speed and energy at each run's first batch size" in res.stdout


def test_run_help_lists_every_precision_every_backend_accepts():
    """Read from the backends' capabilities, not a hand list (the old help named fp32..int4 and
    two examples, so q6_k, iq4_xs, ... and which need an extra were nowhere)."""
    import e3bench.backends  # noqa: F401
    from e3bench.core import registry

    res = run_cli("run", "--help", env={"COLUMNS": "400"}, timeout=120)
    assert res.returncode == 0
    text = " ".join(res.stdout.replace("│", " ").split())
    accepted = text.split("the backends accept: ", 1)[1].split(" --", 1)[0]
    entries = {e.split(": ", 1)[0]: e for e in accepted.split(". ")}
    for name in registry.backends.names():
        caps = registry.backends.peek(name).capabilities
        entry = entries[name]
        for precision in caps.precisions:
            assert re.search(rf"\b{precision}\b", entry), (name, precision)
    assert "int8/int4 need e3bench[quant]" in text
