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
