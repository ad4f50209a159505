"""The one registry: lazy placeholders, extras without importing, aliases, did-you-mean, and
plugins from real entry-point metadata (a fake installed distribution) for every kind."""

import os
import sys
import textwrap

import pytest

from conftest import run_cli
from e3bench.core import registry
from e3bench.core.errors import E3Error, MissingExtra
from e3bench.core.registry import Registry

PLUGIN_MODULE = '''
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from e3bench.core.api import Capabilities, TaskScore
from e3bench.energy.meters import MeterSpec


class ToyTask:
    """A plugin task that scores 1.0 on everything."""

    name = "toy_task"
    requires = frozenset()

    def __init__(self, *, level: int = 1):
        self.level = level

    def evaluate(self, backend, *, limit, seed):
        return TaskScore(task=self.name, metrics={"acc": 1.0}, stderr={}, n_items=1)


class ToyBackend:
    name: ClassVar[str] = "toyback"
    capabilities: ClassVar[Capabilities] = Capabilities(
        devices=frozenset({"cpu"}), precisions=frozenset({"fp32"}), architectures=frozenset({"decoder-only"})
    )

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        width: int = 8

    def __init__(self, *, cache_dir=None, threads=None, width=8):
        self.width = width


def _build(settings):
    from e3bench.energy.meters.null import NullMeter

    return NullMeter()


SPEC = MeterSpec(build=_build, describe=lambda m: "toy meter")
'''

ENTRY_POINTS = """
[e3bench.tasks]
toy_task = fakeplug_mod:ToyTask
hellaswag = fakeplug_mod:ToyTask

[e3bench.backends]
toyback = fakeplug_mod:ToyBackend

[e3bench.meters]
toymeter = fakeplug_mod:SPEC

[e3bench.executors]
toyexec = fakeplug_mod:ToyBackend

[e3bench.trackers]
toytracker = fakeplug_mod:_build
"""


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A distribution 'fakeplug 1.0' installed on sys.path with entry points in every group."""
    (tmp_path / "fakeplug_mod.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = tmp_path / "fakeplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for reg in registry.ALL.values():
        reg.refresh()
    yield tmp_path
    monkeypatch.undo()
    sys.modules.pop("fakeplug_mod", None)
    for reg in registry.ALL.values():
        reg.refresh()


def test_entry_point_plugins_are_listed_and_resolve(plugin_dist):
    from e3bench.energy.meters import make_meter, meter_choices
    from e3bench.evals.tasks import describe_tasks, get_task, task_names

    assert "toy_task" in task_names()
    assert registry.tasks.entry("toy_task").origin == "plugin fakeplug 1.0"
    assert describe_tasks()["toy_task"] == "plugin fakeplug 1.0"
    task = get_task("toy_task", level=3)
    assert type(task).__name__ == "ToyTask" and task.level == 3
    # a plugin cannot take a built-in's name: the built-in stays, the plugin entry is reported
    assert registry.tasks.entry("hellaswag").origin == "built-in"
    assert any("hellaswag" in note and "fakeplug" in note for note in registry.tasks.ignored)
    assert type(get_task("hellaswag")).__name__ == "HellaSwag"
    # the other kinds
    assert "toymeter" in meter_choices()
    meter, why = make_meter("toymeter")
    assert why == "toymeter (requested): toy meter"
    meter.close()
    assert registry.backends.get("toyback").Options().width == 8
    assert "toyexec" in registry.executors and "toytracker" in registry.trackers


def test_plugins_validate_like_built_ins(plugin_dist):
    from e3bench.config.run import build_config
    from e3bench.config.validate import ConfigError

    cfg = build_config(overrides=dict(backend="toyback", meter="toymeter", tasks="toy_task:level=2",
                                      trackers="toytracker"), runnable=True)  # fmt: skip
    assert cfg.backend == "toyback" and cfg.tasks == ("toy_task:level=2",)
    with pytest.raises(ConfigError) as ei:
        build_config(overrides=dict(backend="toyback", dtype="bf16"), sets=["backend_options.depth=2"], runnable=True)
    lines = ei.value.one_lines()
    assert lines == [
        "--set backend_options.depth: backend 'toyback' has no option 'depth' — fix: its options: width (int, default 8)",
        "--dtype: toyback backend: precision 'bf16' not supported on cpu (supported on cpu: fp32)"
        " — fix: choose a supported --dtype / --device",
    ]


def test_cli_lists_plugins(plugin_dist):
    env = {"PYTHONPATH": os.pathsep.join([str(plugin_dist), os.environ.get("PYTHONPATH", "")])}
    res = run_cli("tasks", env=env)
    assert res.returncode == 0, res.stderr
    assert "toy_task" in res.stdout and "plugin fakeplug 1.0" in res.stdout and "mmlu" in res.stdout
    res = run_cli("models", env=env)
    assert res.returncode == 0, res.stderr
    assert "toyback" in res.stdout and "pytorch" in res.stdout
    res = run_cli("plugins", env=env)
    assert res.returncode == 0, res.stderr
    for name in ("toymeter", "toyexec", "toytracker", "e3bench.meters", "ignored"):
        assert name in res.stdout


def test_builtins_of_every_kind():
    assert {"pytorch", "pytorch-compile", "onnxrt", "llamacpp", "vllm"} <= set(registry.backends.names())
    assert {"nvml", "rapl", "estimate", "codecarbon", "none"} <= set(registry.meters.names())
    assert {"mmlu", "mmlu_5shot", "hellaswag", "gsm8k", "jsonl_mc"} <= set(registry.tasks.names())
    assert {"local", "ray"} <= set(registry.executors.names())
    assert {"wandb", "mlflow"} <= set(registry.trackers.names())
    assert registry.tasks.canonical("openbook_qa") == "openbookqa"
    assert registry.backends.entry("vllm").extra == "vllm"
    assert {r.group for r in registry.ALL.values()} == {
        "e3bench.backends", "e3bench.meters", "e3bench.tasks", "e3bench.executors", "e3bench.trackers"
    }  # fmt: skip


def test_lazy_target_is_imported_only_on_get(tmp_path, monkeypatch):
    (tmp_path / "lazy_mod_e3.py").write_text("LOADED = True\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("widget", "e3bench.test-widgets")
    reg.register("thing", "lazy_mod_e3:Thing", description="a thing")
    assert "lazy_mod_e3" not in sys.modules
    assert reg.names() == ["thing"] and reg.entry("thing").description == "a thing"
    assert registry.describe(reg)[0]["installed"] == "yes"
    assert "lazy_mod_e3" not in sys.modules
    assert reg.get("thing").__name__ == "Thing" and "lazy_mod_e3" in sys.modules
    sys.modules.pop("lazy_mod_e3", None)


def test_missing_extra_gives_the_pip_line_without_importing():
    reg: Registry = Registry("widget", "e3bench.test-widgets")
    reg.register("heavy", "e3bench_no_such_module_x:Thing", extra="heavy", requires=("e3bench_no_such_module_x",))
    assert reg.installed() == {"heavy": False}
    assert registry.describe(reg)[0]["installed"] == "no: pip install 'e3bench[heavy]'"
    with pytest.raises(MissingExtra) as ei:
        reg.get("heavy")
    assert ei.value.one_line() == (
        "the heavy widget needs the Python package 'e3bench_no_such_module_x', which is not installed"
        " — fix: pip install 'e3bench[heavy]'"
    )
    assert reg.peek("heavy") is None  # its module cannot be imported here either


def test_decorator_aliases_and_did_you_mean():
    reg: Registry = Registry("widget", "e3bench.test-widgets")

    @reg.register("sprocket", aliases=("cog",))
    def sprocket():
        """Turns things."""

    assert reg.get("cog") is sprocket and reg.entry("sprocket").description == "Turns things."
    assert reg.entry("sprocket").origin == "registered"
    with pytest.raises(E3Error) as ei:
        reg.get("sprockett")
    assert ei.value.one_line() == "unknown widget 'sprockett' — fix: did you mean 'sprocket'?"
    with pytest.raises(E3Error) as ei:
        reg.get("zzz")
    assert ei.value.fix == "available: sprocket"
    with pytest.raises(ValueError, match="already registered"):
        reg.register("cog", "x:y")
    reg.register("sprocket", "x:y", replace=True)
    assert reg.entry("sprocket").target == "x:y" and "cog" not in reg


def test_registering_at_run_time_sees_built_ins_first():
    try:
        registry.tasks.register("my_mc", "e3bench.evals.tasks.multiple_choice:JsonlMultipleChoice")
        assert {"my_mc", "mmlu"} <= set(registry.tasks.names())
        with pytest.raises(ValueError, match="already registered"):
            registry.tasks.register("mmlu", "x:y")
    finally:
        registry.tasks.unregister("my_mc")


def test_check_options_reports_every_problem_in_one_wording():
    from pydantic import BaseModel, ConfigDict

    class Opts(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n_ctx: int = 2048

    ok, errors = registry.check_options("backend", "b", Opts, {"n_ctx": "4096"})
    assert ok.n_ctx == 4096 and errors == []
    ok, errors = registry.check_options("backend", "b", Opts, {"n_ctx": "big", "nctx": 1, "threads": 2},
                                        reserved=registry.BACKEND_RUN_OPTIONS)  # fmt: skip
    assert ok is None
    assert [(k, e.one_line()) for k, e in errors] == [
        ("threads", "backend_options.threads is a run option — fix: use --threads instead"),
        ("n_ctx", "backend 'b' option n_ctx='big' is invalid: Input should be a valid integer, unable to parse string"
                  " as an integer — fix: its options: n_ctx (int, default 2048)"),
        ("nctx", "backend 'b' has no option 'nctx' — fix: its options: n_ctx (int, default 2048)"),
    ]  # fmt: skip
    assert registry.check_options("backend", "b", None, {"anything": 1}) == (None, [])
