import math

import pytest

from e3bench.config.run import RunConfig, build_config, coerce
from e3bench.config.validate import ConfigError
from e3bench.core.errors import E3Error
from fakes.toy_backend import registered


def test_defaults_and_hash_stable():
    a = build_config()
    b = build_config(overrides={"output_dir": "elsewhere"})
    assert a.model == "smollm2-135m" and a.batch_sizes == (1, 4)
    assert a.config_hash() == b.config_hash()  # output location is not identity
    assert build_config(overrides={"max_new_tokens": 64}).config_hash() != a.config_hash()


def test_yaml_then_flags_then_set(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("model: gpt2\nbatch_sizes: [1, 2]\nmax_new_tokens: 16\n")
    cfg = build_config(yaml_path=y, overrides={"max_new_tokens": 8}, sets=["batch_size=4,8", "seed=3"])
    assert cfg.model == "gpt2"
    assert cfg.max_new_tokens == 8
    assert cfg.batch_sizes == (4, 8)
    assert cfg.seed == 3


def test_frozen():
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.model = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"overrides": {"batch_sizes": "0"}}, "batch sizes must be ≥ 1"),
        ({"overrides": {"batch_sizes": "1,x"}}, "batch_sizes must be integers"),
        ({"overrides": {"dtype": "fp8"}}, "bad value for 'dtype'"),
        ({"overrides": {"device": "tpu"}}, "bad value for 'device'"),
        ({"sets": ["max_new_tokns=3"]}, "did you mean 'max_new_tokens'"),
        ({"sets": ["nonsense"]}, "key=value"),
        ({"overrides": {"prompt_tokens": 0}}, "must be ≥ 1"),
    ],
)
def test_bad_values_are_one_line_errors(kw, needle):
    with pytest.raises(E3Error) as ei:
        build_config(**kw)
    assert needle in ei.value.one_line()
    assert "\n" not in ei.value.one_line()


def test_bad_yaml_key_names_the_file(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("modle: gpt2\n")
    with pytest.raises(E3Error) as ei:
        build_config(yaml_path=y)
    assert "modle" in ei.value.problem and str(y) in ei.value.problem
    assert "model" in ei.value.fix


def test_invalid_yaml_and_missing_file(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("model: [unclosed\n")
    with pytest.raises(E3Error, match="not valid YAML"):
        build_config(yaml_path=y)
    with pytest.raises(E3Error, match="not found"):
        build_config(yaml_path=tmp_path / "nope.yaml")


def test_backend_options_from_yaml_set_and_flag(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("backend: llamacpp\nbackend_options: {n_ctx: 1024, n_batch: 64}\n")
    cfg = build_config(yaml_path=y, sets=["backend_options.n_ctx=4096"])
    assert cfg.backend_options == {"n_ctx": 4096, "n_batch": 64}  # --set wins, the rest stays
    assert cfg.config_hash() != build_config(yaml_path=y).config_hash()  # options are identity
    with pytest.raises(E3Error, match="must be a mapping"):
        build_config(overrides={"backend_options": "n_ctx=4"})


# ------------------------------------------------------------- validated when built (issue 11)
@pytest.fixture
def toy_backend():
    with registered() as cls:
        yield cls


def _lines(**kw):
    with pytest.raises(ConfigError) as ei:
        build_config(**kw)
    return ei.value.one_lines()


def test_backend_options_are_typed_by_the_backends_options_model(toy_backend):
    cfg = build_config(overrides={"backend": "toy"}, sets=["backend_options.width=16"], runnable=True)
    assert cfg.backend_options == {"width": 16}
    assert _lines(overrides={"backend": "toy"}, sets=["backend_options.n_ctx=4096"]) == [
        "--set backend_options.n_ctx: backend 'toy' has no option 'n_ctx' — fix: its options: width (int, default 8); mode (str, default 'fast')"
    ]
    (line,) = _lines(overrides={"backend": "toy"}, sets=["backend_options.width=wide"])
    assert line == ("--set backend_options.width: backend 'toy' option width='wide' is invalid: Input should be a valid"
                    " integer, unable to parse string as an integer — fix: its options: width (int, default 8); mode (str,"
                    " default 'fast')")  # fmt: skip
    assert _lines(overrides={"backend": "toy"}, sets=["backend_options.threads=2"]) == [
        "--set backend_options.threads: backend_options.threads is a run option — fix: use --threads instead"
    ]


def test_capabilities_fail_a_single_run_but_not_a_plan(toy_backend):
    assert _lines(overrides={"backend": "toy", "dtype": "bf16"}, runnable=True) == [
        "--dtype: toy backend: precision 'bf16' not supported on cpu (supported on cpu: fp32, int8)"
        " — fix: choose a supported --dtype / --device"
    ]
    assert build_config(overrides={"backend": "toy", "dtype": "bf16"}).dtype == "bf16"  # sweeps skip it instead


def test_every_problem_is_reported_at_once_with_its_flag(toy_backend):
    lines = _lines(
        overrides={"backend": "toy", "meter": "nvm", "region": "Atlantis", "tasks": "hellaswagg",
                   "trackers": "wandb,tensorbord", "threads": 0, "cross_check_meter": "codecarbn"},
        sets=["backend_options.n_ctx=4096", "modle=x"],
    )  # fmt: skip
    assert len(lines) == 8, lines
    assert lines[0] == "--set modle: unknown config key 'modle' — fix: did you mean 'model'?"
    assert lines[1].startswith("--threads: bad value for 'threads': must be ≥ 1 (got 0)")
    assert "--meter: unknown meter 'nvm' — fix: did you mean 'nvml'?" in lines
    assert "--cross-check: unknown meter 'codecarbn' — fix: did you mean 'codecarbon'?" in lines
    assert any(ln.startswith("--region: unknown grid region 'Atlantis'") for ln in lines)
    assert "--tasks: unknown task 'hellaswagg' — fix: did you mean 'hellaswag'?" in lines
    assert "--trackers: unknown tracker 'tensorbord' — fix: available: mlflow, wandb" in lines
    assert any(ln.startswith("--set backend_options.n_ctx: backend 'toy' has no option 'n_ctx'") for ln in lines)


def test_yaml_problems_name_the_line_and_key(tmp_path, toy_backend):
    y = tmp_path / "run.yaml"
    y.write_text("backend: toy\nbatch_sizes: [1]\nmeter: nvm\ntasks:\n  - mmlu\n  - hellaswagg\n"
                 "backend_options:\n  n_ctx: 4096\nmeter: rapl\n")  # fmt: skip
    lines = _lines(yaml_path=y)
    assert lines == [
        f"{y}:9 (meter): key 'meter' is given twice (first at line 3) — fix: keep one of them: YAML would silently use the last",
        f"{y}:6 (tasks.1): unknown task 'hellaswagg' — fix: did you mean 'hellaswag'?",
        f"{y}:8 (backend_options.n_ctx): backend 'toy' has no option 'n_ctx' — fix: its options: width (int, default 8); mode (str, default 'fast')",
    ]


def test_task_and_region_errors_are_config_errors_not_run_errors():
    """Before issue 11 these passed build_config and failed only inside the run."""
    for kw, needle in [({"meter": "nvm"}, "unknown meter 'nvm'"), ({"region": "Atlantis"}, "'Atlantis'"),
                       ({"tasks": "mmlu:foo=1"}, "unexpected keyword argument 'foo'"),
                       ({"cross_check_meter": "bogus"}, "unknown meter 'bogus'"),
                       ({"engine": "lm-eval", "tasks": "hellaswag"}, None)]:  # fmt: skip
        if needle is None:  # lm-eval engine: its own task names; only the extra is checked
            import importlib.util

            if importlib.util.find_spec("lm_eval") is None:
                assert "pip install 'e3bench[lmeval]'" in _lines(overrides=kw)[0]
            continue
        (line,) = _lines(overrides=kw)
        assert needle in line


def test_task_lists_keep_each_tasks_options():
    """A50: the documented name:key=value,key=value used to be split into two 'tasks'."""
    assert coerce("tasks", "mmlu:num_fewshot=1,subjects=anatomy,hellaswag") == (
        "mmlu:num_fewshot=1,subjects=anatomy", "hellaswag"
    )
    assert coerce("tasks", "jsonl_mc:path=a.jsonl,suffix=\\nAnswer:,copa") == ("jsonl_mc:path=a.jsonl,suffix=\\nAnswer:", "copa")
    cfg = build_config(overrides={"tasks": "mmlu:num_fewshot=1,subjects=anatomy"})
    assert cfg.tasks == ("mmlu:num_fewshot=1,subjects=anatomy",)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("threads", 0, "must be ≥ 1 (got 0)"),  # A81: 0 silently meant the library default
        ("threads", -1, "must be ≥ 1 (got -1)"),  # A82: a traceback from torch before
        ("cpu_tdp_w", -5, "watts > 0"),  # A69-A71: accepted, then a nonsense estimate
        ("cpu_tdp_w", 0, "watts > 0"),
        ("cpu_tdp_w", math.nan, "watts > 0"),
        ("min_seconds", math.nan, "finite number"),  # A86: never satisfied
        ("sweep", "../../escaped", "one folder name"),  # S08: wrote outside --output-dir
        ("sweep", "/abs/sweep", "one folder name"),  # S09
        ("model", "", "at least 1 character"),  # A24: '' was resolved to the current directory
    ],
)
def test_values_that_used_to_pass(field, value, needle):
    (line,) = _lines(overrides={field: value})
    assert needle in line and line.startswith(f"--{field.replace('_', '-')}: bad value for '{field}'")
