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
