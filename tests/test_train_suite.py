"""Training-efficiency suite (e3bench train): configs, bad input, the run itself, the report."""

from __future__ import annotations

import json
import math
import random
import re
import textwrap
from pathlib import Path

import pytest

from e3bench.core.errors import E3Error

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "train"
WORDS = ["the", "king", "queen", "shall", "lord", "good", "night", "love", "thee", "thou", "art", "not", "my", "what", "with", "heart", "sweet", "death", "speak", "hath", "come", "say", "more", "well", "time", "make", "man", "let", "like", "upon", "would", "yet", "know", "must"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A seeded synthetic text (~30k characters) with some structure to learn."""
    rng = random.Random(0)
    lines = []
    for _ in range(900):
        n = rng.randint(4, 9)
        lines.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
    p = tmp_path_factory.mktemp("corpus") / "text.txt"
    p.write_text("\n".join(lines), encoding="utf-8")
    return p


def _toml(dir_: Path, name: str, body: str) -> Path:
    p = dir_ / f"{name}.toml"
    p.write_text(textwrap.dedent(body), encoding="utf-8")
    return p


TINY = """
[model]
hidden_size = 64
layers = 1
heads = 2
kv_heads = 2
intermediate_size = 128
seq_len = 32
[data]
vocab_size = 300
batch_size = 4
[train]
max_steps = 6
eval_every = 3
eval_batches = 2
"""


# ------------------------------------------------------------------------------ configs
def test_shipped_configs_validate_and_cover_the_issue():
    from e3bench.train.records import ConfigResult
    from e3bench.train.suite.report import features
    from e3bench.train.suite import expand_paths, load_spec

    specs = [load_spec(p) for p in expand_paths([str(CONFIGS / "*.toml")])]
    names = {s.name for s in specs}
    assert names == {"baseline", "muon", "adamw8bit", "galore", "mtp", "grad_ckpt", "async_loader", "full", "collider"}
    by = {s.name: s for s in specs}
    # every non-baseline config extends the baseline, so editing baseline.toml moves all of them
    for s in specs:
        assert s.model == by["baseline"].model and s.train.max_steps == by["baseline"].train.max_steps
    full = features(ConfigResult(name="full", status="ok", spec=by["full"].model_dump(mode="json")))
    assert {"muon", "adamw8bit", "mtp", "grad_ckpt", "async_loader"} <= set(full)


def test_unknown_optimizer_lists_valid_names(tmp_path):
    from e3bench.train.suite import load_spec

    p = _toml(tmp_path, "bad", '[optim]\nname = "adamm"\n')
    with pytest.raises(E3Error) as ei:
        load_spec(p)
    msg = ei.value.one_line()
    assert "unknown optimizer 'adamm'" in msg and "did you mean 'adamw'" in msg
    # a name with no close match lists every optimizer
    with pytest.raises(E3Error) as ei:
        load_spec(_toml(tmp_path, "bad2", '[optim]\nname = "lion"\n'))
    for name in ("adamw", "muon", "adamw8bit", "galore"):
        assert name in ei.value.fix


@pytest.mark.parametrize(
    ("body", "needle", "hint"),
    [
        ("[optim]\nlrr = 0.1\n", "unknown key 'optim.lrr'", "did you mean 'lr'"),
        ("[trian]\nmax_steps = 3\n", "unknown key 'trian'", "did you mean 'train'"),
        ("[train]\nmax_steps = -3\n", "train.max_steps", ""),
        ("[optim\nname = 1\n", "not valid TOML", ""),
    ],
)
def test_bad_toml_is_one_clear_error(tmp_path, body, needle, hint):
    from e3bench.train.suite import load_spec

    p = _toml(tmp_path, "x", body)
    with pytest.raises(E3Error) as ei:
        load_spec(p)
    assert needle in ei.value.one_line() and str(p) in ei.value.one_line()
    assert hint in ei.value.one_line()


def test_extends_and_set_overrides(tmp_path):
    from e3bench.train.suite import load_spec

    _toml(tmp_path, "base", '[model]\nhidden_size = 96\n[train]\nmax_steps = 7\n')
    child = _toml(tmp_path, "child", 'extends = "base.toml"\n[optim]\nname = "muon"\n')
    s = load_spec(child, ["train.max_steps=3", "optim.lr=0.01"])
    assert (s.name, s.model.hidden_size, s.train.max_steps, s.optim.name, s.optim.lr) == ("child", 96, 3, "muon", 0.01)
    cyc = _toml(tmp_path, "cyc", 'extends = "cyc.toml"\n')
    with pytest.raises(E3Error, match="cycle"):
        load_spec(cyc)
    with pytest.raises(E3Error, match="expects key=value"):
        load_spec(child, ["train.max_steps"])


def test_missing_text_file_fails_before_training(tmp_path):
    from e3bench.train.suite import run_suite

    p = _toml(tmp_path, "baseline", TINY)
    with pytest.raises(E3Error, match="not found"):
        run_suite([p], output_dir=tmp_path / "out", text=str(tmp_path / "nope.txt"), meter="none", idle_seconds=0)
    assert not (tmp_path / "out").exists()


def test_unknown_baseline_and_duplicate_names(tmp_path, corpus):
    from e3bench.train.suite import run_suite

    a = _toml(tmp_path, "a", TINY)
    with pytest.raises(E3Error, match="--baseline 'zzz'"):
        run_suite([a], output_dir=tmp_path, text=str(corpus), baseline="zzz", meter="none", idle_seconds=0)
    b = _toml(tmp_path, "b", 'name = "a"\n' + TINY)
    with pytest.raises(E3Error, match="unique"):
        run_suite([a, b], output_dir=tmp_path, text=str(corpus), meter="none", idle_seconds=0)


# ---------------------------------------------------------------------------- pieces
def test_loader_batches_do_not_depend_on_workers():
    import torch

    from e3bench.train.suite.data import make_train_loader

    ids = torch.arange(5000)
    a = [b.clone() for b in make_train_loader(ids, block_len=17, batch_size=4, steps=5, seed=3)]
    b = [b.clone() for b in make_train_loader(ids, block_len=17, batch_size=4, steps=5, seed=3, num_workers=1)]
    assert len(a) == 5 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (4, 17) and torch.equal(a[0][:, 1:] - a[0][:, :-1], torch.ones(4, 16, dtype=torch.long))


def test_char_and_bpe_tokenizers_round_trip(corpus):
    from e3bench.train.suite.data import load_corpus, train_tokenizer

    c = load_corpus(corpus)
    for kind, vocab in (("char", 0), ("bpe", 300)):
        t = train_tokenizer(c, kind, vocab or 512)
        sample = c.text_val[:200]
        assert t.tokenizer.decode(t.tokenizer.encode(sample).ids) == sample
        assert t.val_ids.numel() > 100
    with pytest.raises(E3Error, match="vocab_size"):
        train_tokenizer(c, "bpe", 100)


def test_dataset_corpus_comes_from_the_data_directory_first(tmp_path, monkeypatch):
    """A hub-style corpus (data.hf_dataset) is looked up in the data directory first, through
    the one dataset resolver, before any hub call."""
    from e3bench.train.suite.data import load_corpus

    d = tmp_path / "data" / "my_stories"
    d.mkdir(parents=True)
    lines = [f"Story {i}: the queen walked to the river and sang." for i in range(200)]
    (d / "train.jsonl").write_text("\n".join(json.dumps({"story": t, "id": i}) for i, t in enumerate(lines)))
    monkeypatch.setenv("E3BENCH_DATA_DIR", str(tmp_path / "data"))
    c = load_corpus(hf_dataset="my_stories", hf_split="train", hf_field="story", val_fraction=0.1)
    assert c.text_train + c.text_val == "\n".join(lines)
    assert str(d / "train.jsonl") in c.source and c.source.endswith(":story")
    with pytest.raises(E3Error) as ei:
        load_corpus(hf_dataset="my_stories", hf_split="train", hf_field="text")
    assert "no field 'text'" in ei.value.problem and "story, id" in ei.value.problem


def test_optimizer_state_bytes_counts_8bit_states():
    import torch

    from e3bench.train.shared.memory import optimizer_state_bytes
    from e3bench.train.shared.optim import OptimSettings, build_optimizer

    def state(name):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(128, 64))
        opt, _ = build_optimizer([("layers.0.w", w)], OptimSettings(name=name, lr=1e-3))
        w.grad = torch.randn_like(w)
        opt.step()
        return optimizer_state_bytes(opt)

    adamw = state("adamw")
    assert adamw >= 2 * 128 * 64 * 4  # two fp32 moments
    eight = state("adamw8bit")
    assert 2 * 128 * 64 <= eight < 0.35 * adamw  # uint8 moments + block scales + quantile maps
    muon = state("muon")
    assert 128 * 64 * 4 <= muon < 0.6 * adamw  # one fp32 momentum buffer
    galore = state("galore")
    assert galore < adamw  # rank-32 moments + projection matrix


def test_unknown_optimizer_in_builder():
    import torch

    from e3bench.train.shared.optim import OptimSettings, build_optimizer

    with pytest.raises(E3Error) as ei:
        build_optimizer([("w", torch.nn.Parameter(torch.zeros(2, 2)))], OptimSettings(name="lion"))
    assert "unknown optimizer 'lion'" in ei.value.problem
    assert ei.value.fix == "use one of: adamw, muon, adamw8bit, galore, muon8bit, galore2"


def test_mtp_heads_add_an_auxiliary_loss():
    import torch

    from e3bench.train.suite.model import ModelSettings, build_model

    ms = ModelSettings(hidden_size=32, layers=1, heads=2, kv_heads=2, intermediate_size=64, seq_len=16)
    lm = build_model(ms, 50, mtp_k=2, mtp_weight=0.5)
    block = torch.randint(0, 50, (2, 17))
    loss, main, aux = lm(block)
    assert aux is not None and torch.isclose(loss, main + 0.5 * aux)
    loss.backward()
    assert lm.mtp_heads[0].down.weight.grad.abs().sum() > 0
    lm.eval()
    _, main_eval, aux_eval = lm(block)
    assert aux_eval is None and torch.isclose(main_eval, main)


def test_compare_interpolates_at_equal_tokens():
    from e3bench.train.records import ConfigResult, CurvePoint
    from e3bench.train.suite import compare

    def cfg(name, losses, tps):
        return ConfigResult(
            name=name, status="ok", tokens=300, train_time_s=300 / tps, tokens_per_s=tps,
            val_loss_curve=[CurvePoint(step=i, tokens=100 * i, loss=v) for i, v in enumerate(losses)],
            final_val_loss=losses[-1], optimizer_state_bytes=1000 if name == "b" else 250,
        )  # fmt: skip

    base = cfg("b", [6.0, 5.0, 4.0, 3.0], 100.0)
    better = cfg("c", [6.0, 4.0, 3.0, 2.0], 50.0)
    v = compare(base, better)
    assert v["delta_val_loss_at_equal_tokens"] == pytest.approx(-1.0)
    assert v["tokens_to_baseline_final_loss"] == pytest.approx(200.0)
    assert v["token_efficiency"] == pytest.approx(1.5)
    assert v["tokens_per_s_ratio"] == pytest.approx(0.5)
    assert v["time_efficiency"] == pytest.approx(3.0 / 4.0)
    assert v["optimizer_state_ratio"] == pytest.approx(0.25)
    worse = cfg("w", [6.0, 5.5, 5.0, 4.5], 100.0)
    assert compare(base, worse)["token_efficiency"] is None  # never reached the baseline's loss


# ------------------------------------------------------------------------------ CUDA fakes
class FakeCuda:
    def __init__(self, available=True, bf16=True):
        self.available, self.bf16 = available, bf16
        self.calls: list[str] = []

    def is_available(self):
        return self.available

    def is_bf16_supported(self):
        return self.bf16

    def synchronize(self, *a):
        self.calls.append("sync")

    def reset_peak_memory_stats(self, *a):
        self.calls.append("reset")

    def max_memory_allocated(self, *a):
        return 123 * 2**20

    def max_memory_reserved(self, *a):
        return 200 * 2**20

    def memory_allocated(self, *a):
        return 20 * 2**20


def test_cuda_precision_device_and_memory_with_fakes():
    import torch

    from e3bench.train.shared import device as common
    from e3bench.train.shared.memory import MemoryTracker

    assert common.resolve_device("auto", cuda=FakeCuda(available=False)) == "cpu"
    assert common.resolve_device("auto", cuda=FakeCuda()) == "cuda"
    with pytest.raises(E3Error, match="no CUDA GPU"):
        common.resolve_device("cuda", cuda=FakeCuda(available=False))
    p = common.resolve_precision("auto", "cuda", cuda=FakeCuda(bf16=True))
    assert (p.name, p.autocast_dtype, p.use_grad_scaler) == ("bf16", torch.bfloat16, False)
    p = common.resolve_precision("auto", "cuda", cuda=FakeCuda(bf16=False))
    assert (p.name, p.autocast_dtype, p.use_grad_scaler) == ("fp16", torch.float16, True)
    assert common.resolve_precision("auto", "cpu").autocast_dtype is None
    with pytest.raises(E3Error, match="fp16 training on CPU"):
        common.resolve_precision("fp16", "cpu")
    with pytest.raises(E3Error, match="does not support bf16"):
        common.resolve_precision("bf16", "cuda", cuda=FakeCuda(bf16=False))
    fake = FakeCuda()
    common.synchronize("cuda", cuda=fake)
    mt = MemoryTracker("cuda", cuda=fake)
    mt.start()
    fig = mt.stop()
    assert fake.calls[:2] == ["sync", "reset"]
    assert fig.peak_device_memory_bytes == 123 * 2**20 and fig.device_memory_reserved_bytes == 200 * 2**20
    assert mt.allocated_start == 20 * 2**20  # weights resident at the start: the breakdown subtracts them
    assert fig.peak_rss_bytes >= fig.rss_start_bytes > 0


def test_cpu_bf16_autocast_trains():
    import torch

    from e3bench.train.shared import device as common

    p = common.resolve_precision("bf16", "cpu")
    lin = torch.nn.Linear(8, 8)
    with common.autocast("cpu", p):
        y = lin(torch.randn(2, 8))
    assert y.dtype == torch.bfloat16


# ------------------------------------------------------------------------------- end to end
def test_suite_end_to_end_with_divergence(tmp_path, corpus):
    """Seven configs on a 60k-parameter model: every figure is filled, grad checkpointing and the
    async loader reproduce the baseline's losses, the absurd learning rate diverges and is
    recorded while the suite continues, and the report + plot are written."""
    from e3bench.train.suite import run_suite

    files = [
        _toml(tmp_path, "baseline", TINY),
        _toml(tmp_path, "adamw8bit", 'extends = "baseline.toml"\n[optim]\nname = "adamw8bit"\n'),
        _toml(tmp_path, "explode", 'extends = "baseline.toml"\n[optim]\nlr = 1e4\ngrad_clip = 1e9\n'),
        _toml(tmp_path, "grad_ckpt", 'extends = "baseline.toml"\n[train]\ngrad_checkpointing = true\n'
              '[claims]\nval_loss_at_equal_tokens = "+0.000 ±0.001"\noptimizer_state_bytes = "-50% ±10"\n'),
        _toml(tmp_path, "collider", 'extends = "baseline.toml"\n[train]\ncollider_sparsity = 0.5\n'
              '[claims]\ntoken_sparsity = "50 ±2"\n'),
        _toml(tmp_path, "async_loader", 'extends = "baseline.toml"\n[data]\nnum_workers = 1\n'),
        _toml(tmp_path, "mtp", 'extends = "baseline.toml"\n[mtp]\nk = 2\n'),
    ]
    msgs: list[str] = []
    rec, out = run_suite(
        files, output_dir=tmp_path / "res", text=str(corpus), meter="estimate", idle_seconds=0.3,
        progress=msgs.append,
    )  # fmt: skip
    by = {c.name: c for c in rec.configs}
    assert [c.name for c in rec.configs][0] == "baseline"
    base = by["baseline"]
    assert base.status == "ok" and base.steps == 6 and base.tokens == 6 * 4 * 32
    assert [p.tokens for p in base.val_loss_curve] == [0, 384, 768]
    assert base.final_val_loss < base.val_loss_curve[0].loss  # it learned something
    assert base.tokens_per_s > 0 and base.step_time_ms.n == 5
    assert base.optimizer_state_bytes > 2 * 4 * base.parameters * 0.9
    e = base.train_energy
    assert e.window == "baseline/train" and e.method == "estimated" and e.net_energy_j > 0
    assert e.ept_total_j_per_token == pytest.approx(e.net_energy_j / base.tokens)
    assert e.energy_per_request_j == pytest.approx(e.net_energy_j / (6 * 4))  # per sequence
    assert base.eval_energy.window == "baseline/eval" and base.eval_energy.gross_energy_j > 0
    assert rec.energy.meter == "estimate" and rec.energy.idle is not None
    assert base.memory.peak_rss_bytes >= base.memory.rss_start_bytes
    assert base.grad_norm.stats.n == 6
    # same math → same numbers
    for name in ("grad_ckpt", "async_loader"):
        c = by[name]
        assert c.status == "ok"
        assert c.final_val_loss == pytest.approx(base.final_val_loss, abs=1e-4), name
        assert c.vs_baseline["delta_val_loss_at_equal_tokens"] == pytest.approx(0.0, abs=1e-4)
    assert by["adamw8bit"].vs_baseline["optimizer_state_ratio"] < 0.5
    assert by["mtp"].mtp_aux_loss_final is not None and by["mtp"].parameters > base.parameters
    ex = by["explode"]
    # one of step.py's three divergence messages, naming the step (ex.steps < 6 below)
    assert ex.status == "diverged"
    assert re.fullmatch(r"training loss (became \S+|\S+) at step [0-5]\b.*|gradient norm became \S+ at step [0-5] .*", ex.reason), ex.reason
    assert ex.steps < 6
    assert any("diverged" in m and "continuing" in m for m in msgs)
    # outputs
    data = json.loads((out / "suite.json").read_text())
    assert data["kind"] == "train-suite" and len(data["configs"]) == 7
    report = (out / "REPORT.md").read_text()
    assert "| explode | diverged |" in report
    # every claim has a verdict; same math → SUPPORTED; AdamW state is the same bytes → NOT SUPPORTED
    assert ("| grad_ckpt | val_loss_at_equal_tokens | +0.000 ±0.001 | same | +0.000 nats | ±0.020 nats | 1 "
            "| **SUPPORTED** |") in report
    assert "| grad_ckpt | optimizer_state_bytes | -50% ±10 | lower | +0.0 % | ±0.0 % | 1 | **NOT SUPPORTED** |" in report
    assert "| collider | token_sparsity | 50 ±2 | within | 50.0 % | ±0.0 % | 1 | **SUPPORTED** |" in report
    assert [r["verdict"] for r in data["claims"]] == ["SUPPORTED", "NOT SUPPORTED", "SUPPORTED"]
    col = by["collider"]
    assert col.collider["token_sparsity"] == pytest.approx(0.5, abs=0.01) and col.collider["filtered_layers"] == 7 + 1  # one layer + lm_head
    assert col.backward_time_ms is not None and base.backward_time_ms.n == 5
    mb = base.memory_breakdown
    assert mb["weights_bytes"] == base.parameter_bytes and mb["optimizer_state_bytes"] == base.optimizer_state_bytes
    assert base.grad_norm_band["steps"] == 6 and base.load["other_cores"] >= 0
    assert "## Memory breakdown, gradients, load" in report
    assert (out / "loss_curves.png").stat().st_size > 1000
    from e3bench.train.suite.report import rebuild

    (out / "REPORT.md").unlink()
    rebuild(out, plot=False)
    assert "Comparison with the baseline" in (out / "REPORT.md").read_text()
    # and `e3bench report` on the results directory lists the suite
    from e3bench.report.render import build_report

    rep = build_report(tmp_path / "res")
    csv = (rep.out_dir / "train_suite.csv").read_text()
    assert rec.suite_id in csv and "explode" in csv and "diverged" in csv
    assert "Training-efficiency suites" in (rep.out_dir / "summary.md").read_text()
    assert "Training-suite claims" in (rep.out_dir / "report.html").read_text()
    assert (rep.training_suites, rep.finetune_runs, rep.configs) == (1, 0, [])  # the console line counts the suite


def test_missing_library_skips_config_with_reason(tmp_path, corpus, monkeypatch):
    from e3bench.core.errors import MissingExtra, require
    from e3bench.train.shared import optim
    from e3bench.train.suite import run_suite

    def fake_require(module, extra, what):
        if module == "galore_torch":
            raise MissingExtra(module, extra, what)
        return require(module, extra, what)

    monkeypatch.setattr(optim, "require", fake_require)
    files = [
        _toml(tmp_path, "baseline", TINY.replace("max_steps = 6", "max_steps = 2").replace("eval_every = 3", "eval_every = 2")),
        _toml(tmp_path, "galore", 'extends = "baseline.toml"\n[optim]\nname = "galore"\n'),
    ]
    rec, out = run_suite(files, output_dir=tmp_path / "r", text=str(corpus), meter="none", idle_seconds=0, plot=False)
    g = rec.configs[1]
    assert rec.configs[0].status == "ok"
    assert g.status == "skipped" and "galore_torch" in g.reason and "e3bench[train]" in g.reason
    assert "| galore | skipped |" in (out / "REPORT.md").read_text()


def test_cli_train_accepts_shell_glob_and_reports_errors(tmp_path, corpus):
    import typer
    from typer.testing import CliRunner

    from e3bench.train.cli import train

    app = typer.Typer()
    app.command()(train)
    app.command("noop")(lambda: None)
    a = _toml(tmp_path, "baseline", TINY.replace("max_steps = 6", "max_steps = 2").replace("eval_every = 3", "eval_every = 2"))
    b = _toml(tmp_path, "muon", 'extends = "baseline.toml"\n[optim]\nname = "muon"\n')
    r = CliRunner().invoke(
        app, ["train", "--suite", str(a), str(b), "--text", str(corpus), "--meter", "none", "--idle-seconds", "0",
              "--no-plot", "-q", "-o", str(tmp_path / "o")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "baseline" in r.stdout and "muon" in r.stdout and "REPORT.md" in r.stdout
    bad = _toml(tmp_path, "bad", '[optim]\nname = "sgdd"\n')
    r = CliRunner().invoke(app, ["train", "--suite", str(bad), "--text", str(corpus)])
    assert r.exit_code != 0 and isinstance(r.exception, E3Error) and "unknown optimizer 'sgdd'" in r.exception.problem


def test_math_helpers():
    from e3bench.train.shared.optim import lr_factor

    assert lr_factor(0, warmup_steps=10, total_steps=100) == pytest.approx(0.1)
    assert lr_factor(10, warmup_steps=10, total_steps=100) == pytest.approx(1.0)
    assert lr_factor(100, warmup_steps=10, total_steps=100) == pytest.approx(0.1)
    assert lr_factor(50, warmup_steps=0, total_steps=100, schedule="constant") == 1.0
    assert math.isfinite(lr_factor(5, warmup_steps=0, total_steps=0))


def test_train_step_schedules_every_optimizer_part_and_guards_divergence():
    """The one shared step: a LambdaLR per part of a combined (Muon + AdamW) optimizer follows
    lr_factor step by step, the fp32 grad scaler is a disabled torch GradScaler, the gradient
    norm is the pre-clipping norm, and a non-finite gradient stops before the optimizer steps."""
    import torch

    from e3bench.train.shared import device as dev
    from e3bench.train.shared import optim
    from e3bench.train.shared.step import Diverged, LossGuard, TrainStep

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 8))
    b = torch.nn.Parameter(torch.zeros(8))
    opt, _ = optim.build_optimizer([("layers.0.w", w), ("layers.0.b", b)], optim.OptimSettings(name="muon", lr=0.01))
    assert len(optim.parts(opt)) == 2
    kw = dict(warmup_steps=2, total_steps=6, schedule="cosine", min_ratio=0.1)
    step = TrainStep(
        params=[w, b], optimizer=opt, schedulers=optim.schedulers(opt, **kw), device="cpu",
        precision=dev.resolve_precision("fp32", "cpu"), grad_clip=0.5, guard=LossGuard(3.0),
    )  # fmt: skip
    assert isinstance(step.scaler, torch.amp.GradScaler) and not step.scaler.is_enabled()
    x = torch.randn(4, 8)
    for n in range(6):
        lrs = [g["lr"] for o in optim.parts(opt) for g in o.param_groups]
        assert lrs == [pytest.approx(0.01 * optim.lr_factor(n, **kw))] * len(lrs), n
        before = w.detach().clone()
        r = step(lambda: (((x @ w + b) ** 2).mean(), "out"), step=n)
        assert r.output == "out" and r.seconds >= 0 and r.grad_norm > 0.5  # pre-clip norm
        assert not torch.equal(before, w.detach()) and w.grad is None  # stepped, grads cleared
    assert step.guard.reference is not None
    # a NaN gradient (finite loss) stops the step before the optimizer moves anything
    before = w.detach().clone()
    w.register_hook(lambda g: torch.full_like(g, float("nan")))
    with pytest.raises(Diverged, match="gradient norm became nan at step 6"):
        step(lambda: (((x @ w + b) ** 2).mean(), None), step=6)
    assert torch.equal(before, w.detach())


def test_seeds_run_interleaved_rounds_and_claims_use_every_round(tmp_path, corpus):
    """--seeds 2: each configuration runs with seed 0 and seed 1, the second round in reverse
    order; round 2 lands in ``repeats``; a claim is judged over both rounds (t-interval)."""
    from e3bench.train.suite import run_suite

    files = [
        _toml(tmp_path, "baseline", TINY),
        _toml(tmp_path, "ckpt", 'extends = "baseline.toml"\n[train]\ngrad_checkpointing = true\n'
              '[claims]\nval_loss_at_equal_tokens = "+0.000 ±0.001"\n'),
    ]
    msgs: list[str] = []
    rec, _ = run_suite(files, output_dir=tmp_path / "res", text=str(corpus), meter="none", idle_seconds=0.1,
                       progress=msgs.append, seeds=2, plot=False)  # fmt: skip
    order = [m.split(" (")[0] + m.rsplit(",", 1)[1] for m in msgs if m.startswith("== ")]
    assert order == ["== baseline seed 0", "== ckpt seed 0", "== ckpt seed 1", "== baseline seed 1"]
    assert rec.seeds == [0, 1] and [(c.name, c.seed) for c in rec.repeats] == [("ckpt", 1), ("baseline", 1)]
    assert rec.repeats[1].final_val_loss != rec.configs[0].final_val_loss  # another seed, another run
    (claim,) = rec.claims
    assert claim["seeds"] == 2 and claim["measured"] == pytest.approx(0.0, abs=1e-4)
    assert claim["verdict"] == "SUPPORTED"
    with pytest.raises(E3Error, match="--seeds must be at least 1"):
        run_suite(files, output_dir=tmp_path / "res", text=str(corpus), seeds=0)


def test_too_many_loader_workers_is_one_recorded_line_not_torch_warnings(recwarn):
    """The seed set keeps its published loader settings (4–6 workers) on a 2-core machine: torch's
    UserWarning (printed twice per configuration) is replaced by one line in the record."""
    import os

    import torch

    from e3bench.train.suite import data

    cores = len(os.sched_getaffinity(0))
    loader = data.make_train_loader(torch.arange(4000), block_len=17, batch_size=2, steps=2, seed=0,
                                    num_workers=cores + 1, prefetch_factor=2)  # fmt: skip
    with data.quiet_worker_check():
        batches = list(loader)
    assert len(batches) == 2
    assert not [w for w in recwarn if "worker" in str(w.message)]
    assert f"{cores + 1} loader processes on {cores} usable CPU cores" in data.workers_warning(cores + 1)
    assert data.workers_warning(cores) is None


def test_training_threads_follow_the_one_rule_with_one_core_spare(monkeypatch):
    """Training's CPU default is core.host.resolve_threads with one core spare — the one thread
    rule of every run: --threads first, then OMP_NUM_THREADS (training ignored it before), then
    the physical cores available less one, at least 1."""
    from e3bench.core import host

    for cores, want in ((2, 1), (1, 1), (16, 15)):
        monkeypatch.setattr(host, "physical_cores_available", lambda c=cores: c)
        assert host.resolve_threads(None, environ={}, spare_cores=1) == (want, "resolved_spare")
        assert host.resolve_threads(None, environ={}) == (cores, "resolved")
    assert host.resolve_threads(None, environ={"OMP_NUM_THREADS": "3"}, spare_cores=1) == (3, "environment")
    assert host.resolve_threads(4, environ={"OMP_NUM_THREADS": "3"}, spare_cores=1) == (4, "user")
    import e3bench.train.suite.run as suite_run

    assert not hasattr(suite_run, "default_threads")  # one policy, in core.host


@pytest.mark.parametrize("extra, says", [
    ("[model]\nhidden_size = 130\nheads = 4\n", "model.hidden_size 130 is not divisible by model.heads 4"),
    ("[model]\nheads = 4\nkv_heads = 3\n", "model.heads 4 is not a multiple of model.kv_heads 3"),
    ('[claims]\nnosuch_metric = "< 0%"\n', "claims.nosuch_metric: unknown claim metric 'nosuch_metric'"),
])  # fmt: skip
def test_shape_and_claim_errors_name_the_file_when_it_loads(tmp_path, extra, says):
    """Head counts that do not divide failed that configuration only when its turn came (after
    the others trained; the suite still exited 0); an unknown claim metric did not name the file."""
    from e3bench.train.suite import load_spec

    p = tmp_path / "x.toml"
    p.write_text(f'name = "x"\nextends = "{CONFIGS / "baseline.toml"}"\n{extra}')
    with pytest.raises(E3Error) as ei:
        load_spec(p)
    assert ei.value.problem.startswith(f"{p}: ") and says in ei.value.problem


def test_the_console_table_says_why_a_configuration_failed():
    """A failed configuration showed only 'failed' in the console (its reason was only in suite.json)."""
    from e3bench.train.cli import format_suite
    from e3bench.train.records import ConfigResult, SuiteRecord

    rec = SuiteRecord.model_construct(configs=[ConfigResult(name="x", status="failed", seed=0, reason="no data — fix: add it")],
                                      repeats=[], claims=[])  # fmt: skip
    assert "x (seed 0) failed: no data — fix: add it" in format_suite(rec)
