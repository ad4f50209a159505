import pytest

from e3bench.config.run import RunConfig, build_config
from e3bench.core.errors import E3Error


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
