"""lm-eval-style ``--model-args`` (revision, trust_remote_code, chat_template, dtype, device,
pretrained): parsed into the run config's own fields, unknown keys refused in one line, recorded
in the config (and its hash where they change results), and the chat template applied to task
prompts only when asked."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from e3bench.config.run import build_config
from e3bench.config.validate import ConfigError
from e3bench.core.api import LogLik
from e3bench.core.errors import E3Error


def test_model_args_set_the_fields_they_name():
    cfg = build_config(overrides={"model_args": "revision=main,trust_remote_code=true,chat_template=off,dtype=bfloat16"})
    assert (cfg.revision, cfg.trust_remote_code, cfg.chat_template, cfg.dtype) == ("main", True, False, "bf16")
    on = build_config(overrides={"model_args": "chat_template=on,device=cuda:1,pretrained=gpt2"})
    assert (on.chat_template, on.device, on.model) == (True, "cuda:1", "gpt2")


def test_model_args_from_yaml_mapping_and_set(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("model_args:\n  revision: v1.0\n  apply_chat_template: true\n")
    cfg = build_config(yaml_path=y)
    assert (cfg.revision, cfg.chat_template) == ("v1.0", True)
    assert build_config(sets=["model_args=revision=abc123"]).revision == "abc123"


def test_unknown_model_arg_is_one_line_listing_the_known_keys():
    with pytest.raises(ConfigError) as ei:
        build_config(overrides={"model_args": "revision=main,parallelize=true"})
    (line,) = ei.value.one_lines()
    assert line.startswith("--model-args: unknown model argument 'parallelize' (known: pretrained, revision, "
                           "trust_remote_code, chat_template, apply_chat_template, dtype, device)")  # fmt: skip


def test_bad_model_arg_values_are_named_at_the_flag():
    with pytest.raises(ConfigError) as ei:
        build_config(overrides={"model_args": "chat_template=maybe"})
    assert ei.value.one_lines()[0].startswith("--model-args (chat_template): bad value for 'chat_template'")
    with pytest.raises(ConfigError, match="expects key=value"):
        build_config(overrides={"model_args": "revision"})


def test_trust_remote_code_is_off_unless_asked_and_recorded_when_on():
    assert build_config().trust_remote_code is False
    cfg = build_config(overrides={"model_args": "trust_remote_code=true,revision=r1,chat_template=on"})
    notes = cfg.model_notes()
    assert notes[0].startswith("trust_remote_code was ON (asked for)")
    assert "hub revision r1 (asked for)" in notes and any("chat template" in n for n in notes)
    assert build_config().model_notes() == []


def test_identity_counts_model_args_only_when_set():
    base = build_config()
    assert base.config_hash() == "feb81a77eed5268d"  # the hash before these fields existed
    for args in ("revision=main", "chat_template=on", "trust_remote_code=true"):
        assert build_config(overrides={"model_args": args}).config_hash() != base.config_hash(), args
    assert build_config(overrides={"model_args": "chat_template=off"}).config_hash() == base.config_hash()


def test_revision_of_a_local_model_is_refused(tiny_models):
    from e3bench.backends.models import resolve

    with pytest.raises(E3Error, match="picks a version of a Hugging Face hub model"):
        resolve(str(tiny_models["decoder"]), revision="main")
    assert resolve("org/model", revision="v2").revision == "v2"


def test_cli_takes_model_args_and_refuses_unknown_keys(tmp_path):
    from e3bench.cli.app import app

    r = CliRunner().invoke(app, ["run", "--model-args", "revison=main", "--tasks", "none", "-o", str(tmp_path)])
    assert r.exit_code != 0
    assert "unknown model argument 'revison' (known: pretrained, revision" in r.output


# ------------------------------------------------------------------------ chat template
class _Tok:
    chat_template = "{{ '<|user|>' + messages[0]['content'] + '<|assistant|>' }}"

    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=True):
        assert tokenize is False and add_generation_prompt is True
        return f"<|user|>{msgs[0]['content']}<|assistant|>"


class _Recording:
    name = "recording"
    device = "cpu"

    def __init__(self, tok) -> None:
        self.tokenizer = tok
        self.seen: list = []

    def loglikelihood(self, requests):
        self.seen += list(requests)
        return [LogLik(-1.0, False, 1) for _ in requests]

    def encode_context(self, text, *, max_new_tokens):
        self.seen.append(text)
        return [1, 2], False


def test_chat_template_wraps_the_context_and_leaves_the_continuation():
    from e3bench.evals.chat import ChatTemplated

    inner = _Recording(_Tok())
    b = ChatTemplated(inner)
    b.loglikelihood([("Q: 2+2?\nA:", " 4")])
    b.encode_context("Say hi", max_new_tokens=4)
    assert inner.seen == [("<|user|>Q: 2+2?\nA:<|assistant|>", " 4"), "<|user|>Say hi<|assistant|>"]
    assert b.device == "cpu" and b.name == "recording"  # everything else is the backend's


def test_chat_template_on_a_tokenizer_without_one_is_one_line():
    from e3bench.evals.chat import ChatTemplated

    class NoTemplate:
        chat_template = None

    with pytest.raises(E3Error, match="has no chat template"):
        ChatTemplated(_Recording(NoTemplate()))


def test_chat_template_renders_with_a_real_tokenizer(tiny_models):
    from transformers import AutoTokenizer

    from e3bench.evals.chat import render

    tok = AutoTokenizer.from_pretrained(str(tiny_models["decoder"]))
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert render(tok, "Hello") == "<user>Hello<assistant>"


@pytest.mark.skipif(__import__("importlib").util.find_spec("lm_eval") is None, reason="lm-eval not installed")
def test_lm_eval_engine_gets_the_chat_template_from_the_backend():
    """lm-eval's --apply_chat_template calls these three on the model it is given."""
    from e3bench.evals.lmeval_engine import make_lm

    inner = _Recording(_Tok())
    inner.tokenizer.name_or_path = "org/instruct"
    lm = make_lm(inner)
    assert lm.apply_chat_template([{"role": "user", "content": "Hi"}]) == "<|user|>Hi<|assistant|>"
    assert lm.tokenizer_name == "org__instruct" and lm.chat_template(True) == _Tok.chat_template
    assert lm.chat_template(False) is None


def test_a_field_given_twice_is_refused_not_last_wins(tmp_path):
    """``--dtype fp32 --model-args dtype=bfloat16`` ran bf16 silently (the model argument won by
    dict order), and ``dtype=bf16,dtype=fp32`` kept the last: each is one line now."""
    for overrides, says in [
        ({"dtype": "fp32", "model_args": "dtype=bfloat16"}, "--model-args (dtype): it sets dtype=bf16, but --dtype gives fp32"),
        ({"model_args": "device=cuda:1", "device": "cpu"}, "it sets device=cuda:1, but --device gives cpu"),
        ({"model_args": "dtype=bf16,dtype=fp32"}, "model argument 'dtype' is given twice"),
        ({"model_args": "chat_template=on,apply_chat_template=off"},
         "model arguments 'chat_template' and 'apply_chat_template' both set chat_template"),
    ]:
        with pytest.raises(ConfigError) as info:
            build_config(overrides=overrides)
        assert says in str(info.value), (overrides, str(info.value))
    y = tmp_path / "run.yaml"
    y.write_text("dtype: fp32\nmodel_args: {dtype: bf16}\n")
    with pytest.raises(ConfigError, match=r"run.yaml:2 \(model_args\) \(dtype\): it sets dtype=bf16, but .*run.yaml:1"):
        build_config(yaml_path=y)
    # the same value twice is not a conflict; a later layer (--set) still overrides an earlier one
    assert build_config(overrides={"dtype": "bf16", "model_args": "dtype=bfloat16"}).dtype == "bf16"
    assert build_config(overrides={"dtype": "fp32"}, sets=["model_args=dtype=bf16"]).dtype == "bf16"
