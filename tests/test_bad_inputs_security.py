"""Hostile and damaged files e3bench reads but did not write (issue 13, "Security"), through the
real CLI (``python -m e3bench ...`` in a subprocess: what a user sees) where the issue names a
command, in-process for the cases around them.

One test (or parametrized table) per kind:

1. code is never executed from a file the user did not ask to run: checkpoints are read with
   ``torch.load(weights_only=True)`` (a crafted pickle in ``optimizer.pt`` / ``extra.pt`` used
   to run on ``finetune --resume``); a source scan keeps every loader call site honest;
2. ``trust_remote_code`` is always passed explicitly: a model folder with its own code
   (``auto_map``) is refused with one line naming ``--trust-remote-code`` and no terminal
   prompt (transformers asked "[y/N]" and ran the code on "y"), runs when the flag is given,
   and the record says so;
3. damaged model files (truncated ``model.safetensors``, ``config.json`` or ``tokenizer.json``
   that is not JSON, an empty or foreign ``.gguf``, a broken ``model.onnx``): one
   ``error: ... — fix: ...`` line naming the file, exit 2, no traceback, before the model loads;
4. files of the same kind: e3bench's own caches (GGUF conversion, ONNX export manifest),
   damaged checkpoints and data files.

Case ids follow ``../shared/findings/bad-inputs.md`` where a row exists (A06, A12, A19, A21).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from e3bench.core.errors import E3Error

SRC = Path(__file__).resolve().parents[1] / "src" / "e3bench"
FAST = ["--min-iters", "2", "--min-seconds", "0", "--warmup-iters", "0", "--set", "idle_seconds=0",
        "--max-new-tokens", "4", "--prompt-tokens", "8", "--batch-size", "1", "--meter", "none"]  # fmt: skip


def cli(*args, stdin: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m e3bench *args``; ``stdin``: text fed to it (None: stdin closed, /dev/null)."""
    return subprocess.run(
        [sys.executable, "-m", "e3bench", *map(str, args)],
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def one_error_line(res, *needles: str) -> str:
    """Exit 2, no traceback, exactly one ``error: ... — fix: ...`` line holding every needle."""
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr[-3000:])
    assert " — fix: " in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


class _RunsCode:
    """Unpickling this calls ``exec`` (what a crafted checkpoint does): it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def crafted_pt(path: Path, marker: Path) -> None:
    """A real torch checkpoint file (zip format) whose pickle runs code when loaded unsafely."""
    import torch

    torch.save({"state": {}, "param_groups": [], "torch_rng": _RunsCode(marker)}, path)


# --- 1. never execute code from a checkpoint ------------------------------------------------


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_models) -> tuple[Path, list[str]]:
    """One real ``e3bench finetune`` (LoRA, 2 steps) with a checkpoint; returns the output folder
    and the arguments that resume it."""
    tmp = tmp_path_factory.mktemp("ft")
    rows = [{"query": f"Is {w} blue?", "choices": ["no", "yes"], "gold": int(w == "blue")}
            for w in ["blue", "red", "green", "blue", "dark", "blue", "pale", "sky"]]  # fmt: skip
    data = tmp / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp / "out"
    args = ["finetune", "-m", tiny_models["decoder"], "--train-file", data, "--eval-file", data,
            "--batch-size", "4", "--eval-every", "2", "--max-eval-samples", "4", "--max-seq-len", "32",
            "--meter", "none", "--idle-seconds", "0", "-q"]  # fmt: skip
    res = cli(*args, "--max-steps", "2", "-o", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, [str(a) for a in args]


def _checkpoint(out: Path) -> Path:
    (ckpt,) = (out / "finetune" / "checkpoints").iterdir()
    return ckpt


@pytest.mark.parametrize("name", ["optimizer.pt", "extra.pt"])
def test_resume_never_runs_code_from_a_checkpoint(finetuned, tmp_path, name):
    """Issue 13: a crafted ``optimizer.pt`` / ``extra.pt`` in the checkpoint folder ran its code
    on ``finetune --resume`` (``torch.load(weights_only=False)``). Now: not loaded, no marker,
    one line naming the file and the fix."""
    src, args = finetuned
    out = tmp_path / "out"
    shutil.copytree(src, out)
    marker = tmp_path / "MARKER"
    crafted_pt(_checkpoint(out) / name, marker)
    res = cli(*args, "--max-steps", "4", "-o", out, "--resume")
    assert not marker.exists(), "code in the checkpoint was executed"
    one_error_line(res, name, "never runs code", "delete the checkpoint directory")


def _small_checkpoint(tmp_path: Path, optimizer: str = "adamw"):
    """A checkpoint of a two-layer model (what ``finetune`` writes), and a fresh model/optimizer
    of the same shape to load it into."""
    import torch

    from e3bench.train.finetune import checkpoint
    from e3bench.train.finetune.state import TrainerState
    from e3bench.train.shared import optim

    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 4))
        settings = optim.OptimSettings(name=optimizer, lr=1e-2, galore_rank=4, galore_update_proj_gap=1)
        return model, optim.build_optimizer(model.named_parameters(), settings)[0]

    model, opt = build()
    for _ in range(2):
        model(torch.randn(8, 32)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    ckpt = tmp_path / "ckpt"
    checkpoint.save(ckpt, model, opt, {"scaler": {}}, TrainerState(config_hash="abc", step=2), peft_model=False)
    return ckpt, model, opt, build


def _damage(ckpt: Path, name: str, how: str, marker: Path) -> None:
    import torch

    f = ckpt / name
    if how == "code":
        crafted_pt(f, marker)
    elif how == "truncated":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "missing":
        f.unlink()
    elif how == "not JSON":
        f.write_text("{garbage")
    elif how == "other config":
        f.write_text(json.dumps({"config_hash": "0123456789abcdef", "step": 2}))
    elif how == "wrong shape":
        torch.save({"0.weight": torch.zeros(3, 3)}, f)


@pytest.mark.parametrize(
    ("name", "how", "needle"),
    [
        ("trainable_state.pt", "code", "never runs code"),
        ("optimizer.pt", "truncated", "is damaged"),
        ("extra.pt", "missing", "extra.pt is missing"),
        ("trainer_state.json", "not JSON", "is damaged"),
        ("trainer_state.json", "other config", "another configuration"),
        ("trainable_state.pt", "wrong shape", "another shape"),
    ],
)
def test_damaged_checkpoint_is_one_error(tmp_path, name, how, needle):
    """Every way a checkpoint folder can be wrong is one E3Error naming it (before: code ran,
    or JSONDecodeError / RuntimeError / FileNotFoundError tracebacks)."""
    from e3bench.train.finetune import checkpoint

    ckpt, _, _, build = _small_checkpoint(tmp_path)
    marker = tmp_path / "MARKER"
    _damage(ckpt, name, how, marker)
    model, opt = build()
    with pytest.raises(E3Error, match=needle) as info:
        checkpoint.load(ckpt, model, opt, expected_hash="abc")
    assert str(ckpt) in info.value.one_line() and "without --resume" in info.value.fix
    assert not marker.exists()


def test_galore_checkpoint_round_trips_as_plain_data(tmp_path):
    """GaLore keeps a projector object in its optimizer state (the reason the old loader needed
    ``weights_only=False``): it is saved as plain data and rebuilt, so a GaLore run resumes with
    the very projection it had."""
    pytest.importorskip("galore_torch")
    import torch

    from e3bench.train.finetune import checkpoint

    ckpt, model, opt, build = _small_checkpoint(tmp_path, "galore")
    torch.load(ckpt / "optimizer.pt", weights_only=True)  # plain data only
    model2, opt2 = build()
    state, _ = checkpoint.load(ckpt, model2, opt2, expected_hash="abc")
    assert state.step == 2
    old = [s["projector"] for s in opt.state.values() if "projector" in s]
    new = [s["projector"] for s in opt2.state.values() if "projector" in s]
    assert len(new) == len(old) == 2  # both hidden matrices
    for p_old, p_new in zip(old, new, strict=True):
        assert type(p_new) is type(p_old) and p_new.rank == p_old.rank == 4
        assert torch.equal(p_new.ortho_matrix, p_old.ortho_matrix)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def _kw(node: ast.Call, key: str):
    return next((k.value for k in node.keywords if k.arg == key), None)


def test_no_loader_in_src_can_run_code_unasked():
    """The kind, everywhere: in every module of ``src/e3bench`` and ``benchmarks/``, ``torch.load`` passes
    ``weights_only=True``; every transformers ``from_pretrained`` / ``pipeline``, datasets
    ``load_dataset`` and vLLM ``EngineArgs`` / ``LLM`` call passes ``trust_remote_code``
    explicitly (``load_dataset``: False); nothing calls pickle/marshal/shelve/joblib/dill
    loaders, ``yaml.load`` / ``unsafe_load`` or the ``eval`` / ``exec`` builtins. Before: 19
    call sites (3 ``torch.load`` in the checkpoint loader, 13 transformers calls, vLLM's
    ``EngineArgs``, 2 ``load_dataset``)."""
    bad = []
    for path in sorted([*SRC.rglob("*.py"), *(SRC.parents[1] / "benchmarks").rglob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(SRC.parents[1])
        for node, owner, name in _calls(tree):
            at = f"{where}:{node.lineno} {owner + '.' if owner else ''}{name}"
            if owner == "torch" and name == "load":
                v = _kw(node, "weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    bad.append(f"{at} without weights_only=True")
            elif name in ("from_pretrained", "pipeline", "EngineArgs", "LLM") and _kw(node, "trust_remote_code") is None:
                bad.append(f"{at} without trust_remote_code")
            elif name == "load_dataset":
                v = _kw(node, "trust_remote_code")
                if not (isinstance(v, ast.Constant) and v.value is False):
                    bad.append(f"{at} without trust_remote_code=False")
            elif owner in ("pickle", "marshal", "shelve", "joblib", "dill", "cloudpickle") and "load" in name:
                bad.append(at)
            elif owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all", "unsafe_load_all"):
                bad.append(at)
            elif not owner and isinstance(node.func, ast.Name) and name in ("eval", "exec"):
                bad.append(at)
    assert bad == []


# --- 2. trust_remote_code -------------------------------------------------------------------


def remote_code_dir(src: Path, dst: Path, marker: Path, *, model_type: str = "evilmodel") -> Path:
    """A copy of the tiny decoder whose config.json names its own configuration and modeling
    code (``auto_map``); importing either module writes ``marker``."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(model_type=model_type, architectures=["EvilModel"],
               auto_map={"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"})  # fmt: skip
    (dst / "config.json").write_text(json.dumps(cfg))
    plant = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (dst / "configuration_evil.py").write_text(
        plant + f"from transformers import LlamaConfig\n\nclass EvilConfig(LlamaConfig):\n    model_type = {model_type!r}\n"
    )
    (dst / "modeling_evil.py").write_text(
        plant + "from transformers import LlamaForCausalLM\nfrom .configuration_evil import EvilConfig\n\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    return dst


def test_custom_code_is_refused_without_a_prompt(tiny_models, tmp_path):
    """Issue 13: transformers asked "Do you wish to run the custom code? [y/N]" on the terminal
    and ran the folder's code on "y". Now, with "y" waiting on stdin: no prompt, no code run, one
    line naming --trust-remote-code."""
    marker = tmp_path / "MARKER"
    model = remote_code_dir(tiny_models["decoder"], tmp_path / "remote", marker)
    res = cli("run", "-m", model, "-o", tmp_path / "out", *FAST, stdin="y\n")
    assert not marker.exists(), "the model folder's code was executed"
    assert "[y/N]" not in res.stdout + res.stderr
    one_error_line(res, str(model), "ships its own Python code", "--trust-remote-code")
    assert not (tmp_path / "out" / "runs").exists()


def test_finetune_refuses_custom_code_with_stdin_closed(tiny_models, tmp_path):
    """The same refusal in ``finetune`` (the one model loader), stdin closed."""
    marker = tmp_path / "MARKER"
    model = remote_code_dir(tiny_models["decoder"], tmp_path / "remote", marker)
    data = tmp_path / "mc.jsonl"
    data.write_text(json.dumps({"query": "Is it blue?", "choices": ["no", "yes"], "gold": 1}) + "\n")
    res = cli("finetune", "-m", model, "--train-file", data, "--eval-file", data, "--max-steps", "1",
              "--meter", "none", "--idle-seconds", "0", "-o", tmp_path / "out")  # fmt: skip
    assert not marker.exists()
    one_error_line(res, "ships its own Python code", "--trust-remote-code")


def test_trust_remote_code_runs_it_and_the_record_says_so(tiny_models, tmp_path):
    """With ``--trust-remote-code`` the folder's code runs (the user asked), and the record holds
    ``config.trust_remote_code: true``, a model note naming the files, and its own config hash."""
    from e3bench.config.run import RunConfig

    marker = tmp_path / "MARKER"
    model = remote_code_dir(tiny_models["decoder"], tmp_path / "remote", marker)
    res = cli("run", "-m", model, "-o", tmp_path / "out", *FAST, "--trust-remote-code")
    assert res.returncode == 0, res.stderr[-3000:]
    assert marker.read_text() == "ran"
    (path,) = (tmp_path / "out" / "runs").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["config"]["trust_remote_code"] is True
    assert any("configuration_evil.py, modeling_evil.py" in n for n in rec["model"]["notes"])
    cfg = RunConfig.model_validate(rec["config"])
    assert rec["config_hash"] == cfg.config_hash() != cfg.model_copy(update={"trust_remote_code": False}).config_hash()


def test_config_hash_without_the_flag_is_unchanged():
    """Not trusting is the default and adds nothing to a run's identity: hashes of records made
    before the field existed still match (sweeps resume, compare pairs them)."""
    from e3bench.config.run import RunConfig
    from e3bench.core.ids import stable_hash

    cfg = RunConfig()
    old = cfg.model_dump(exclude={"output_dir", "sweep", "cache_dir", "log_samples", "trackers", "trust_remote_code",
                                 "num_fewshot", "include_path", "meter_timeout_s", "revision",
                                 "chat_template", "score_batch_size", "pue"})
    assert cfg.config_hash() == stable_hash(old)
    # the default hash before revision / chat_template / score_batch_size / pue existed (987d94d)
    assert cfg.config_hash() == "feb81a77eed5268d"
    assert "trust_remote_code" in RunConfig(trust_remote_code=True).identity()


def test_known_model_type_loads_builtin_classes_and_ignores_the_folder_code(tiny_models, tmp_path):
    """A folder naming custom code for a model type transformers knows (Phi-3 on the hub does)
    loads with transformers' own classes: the code is not run, and a note says so."""
    from e3bench.backends.models import load_pretrained

    marker = tmp_path / "MARKER"
    model = remote_code_dir(tiny_models["decoder"], tmp_path / "known", marker, model_type="llama")
    got = load_pretrained(str(model))
    assert type(got.model).__name__ == "LlamaForCausalLM" and not marker.exists()
    assert any("was not run" in n and "--trust-remote-code" in n for n in got.notes)


def test_custom_tokenizer_code_is_refused(tiny_models, tmp_path):
    """Custom code named by tokenizer_config.json (a model type transformers knows): refused
    with the same line, the code not run."""
    from e3bench.backends.models import load_pretrained

    marker = tmp_path / "MARKER"
    d = tmp_path / "tok"
    shutil.copytree(tiny_models["decoder"], d)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc.update(auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}, tokenizer_class="EvilTokenizer")
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    (d / "tokenization_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n"
    )
    with pytest.raises(E3Error, match="ships its own Python code") as info:
        load_pretrained(str(d))
    assert "--trust-remote-code" in info.value.fix and not marker.exists()


# --- 3. damaged model files -----------------------------------------------------------------


def _safetensors(d: Path) -> Path:
    return d / "model.safetensors"


def _set_header_length(f: Path, n: int) -> None:
    b = bytearray(f.read_bytes())
    b[:8] = struct.pack("<Q", n)
    f.write_bytes(bytes(b))


#: (case id, file named in the error, how to damage a copy of the tiny decoder)
MODEL_DIR_CASES = {
    "A21-truncated-safetensors": ("model.safetensors", lambda d: os.truncate(_safetensors(d), _safetensors(d).stat().st_size // 2)),
    "A19-config-not-json": ("config.json", lambda d: (d / "config.json").write_text("{not json")),
    "tokenizer-json-garbage": ("tokenizer.json", lambda d: (d / "tokenizer.json").write_text("garbage garbage")),
}  # fmt: skip
#: cases checked in-process (the same check, no subprocess each)
MORE_MODEL_DIR_CASES = {
    "safetensors-empty": ("model.safetensors", lambda d: _safetensors(d).write_bytes(b"")),
    "safetensors-header-beyond-file": ("model.safetensors", lambda d: _set_header_length(_safetensors(d), 10**12)),
    "safetensors-header-not-json": ("model.safetensors", lambda d: _set_header_length(_safetensors(d), 8)),
    "safetensors-trailing-bytes": ("model.safetensors", lambda d: _safetensors(d).open("ab").write(b"\0" * 64)),
    "config-json-a-list": ("config.json", lambda d: (d / "config.json").write_text("[1, 2]")),
    "tokenizer-config-garbage": ("tokenizer_config.json", lambda d: (d / "tokenizer_config.json").write_text("{{{")),
    "generation-config-garbage": ("generation_config.json", lambda d: (d / "generation_config.json").write_text("{{")),
    "config-not-utf8": ("config.json", lambda d: (d / "config.json").write_bytes(b"\xff\xfe{")),
    "index-names-missing-shard": ("model.safetensors.index.json", lambda d: (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))),
}  # fmt: skip


def damaged(src: Path, dst: Path, damage) -> Path:
    shutil.copytree(src, dst)
    damage(dst)
    return dst


@pytest.mark.parametrize("case", sorted(MODEL_DIR_CASES))
def test_damaged_model_folder_is_one_line_before_loading(tiny_models, tmp_path, case):
    """``e3bench run`` on a damaged model folder: one line naming the file and the fix, exit 2,
    no traceback, no record (A21 was a SafetensorError traceback; a garbage tokenizer.json a
    JSONDecodeError traceback)."""
    name, damage = MODEL_DIR_CASES[case]
    model = damaged(tiny_models["decoder"], tmp_path / "m", damage)
    res = cli("run", "-m", model, "-o", tmp_path / "out", *FAST)
    one_error_line(res, str(model / name), "copy the model folder again")
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize("case", sorted(MORE_MODEL_DIR_CASES))
def test_more_damaged_model_folders(tiny_models, tmp_path, case):
    """The same check in-process for more damage (``resolve`` runs it, so a run stops before
    its meters and model start); each names the file."""
    from e3bench.backends.models import resolve

    name, damage = MORE_MODEL_DIR_CASES[case]
    model = damaged(tiny_models["decoder"], tmp_path / "m", damage)
    with pytest.raises(E3Error) as info:
        resolve(str(model))
    assert str(model / name) in info.value.one_line()


def test_the_undamaged_folder_passes_every_check(tiny_models):
    """The checks refuse damage, not models: the three tiny architectures pass, with no note."""
    from e3bench.backends.modelfiles import check_model_dir

    assert [check_model_dir(p) for p in tiny_models.values()] == [[], [], []]


def test_a_folder_without_tokenizer_files_is_named_with_the_fix(tiny_models, tmp_path):
    """Weights and config but no tokenizer files: one line saying so and how to add them (it was
    transformers' "Couldn't instantiate the backend tokenizer from one of:", cut at its line
    break), exit 2, no record."""
    from e3bench.backends.modelfiles import TOKENIZER_GLOBS

    model = damaged(tiny_models["decoder"], tmp_path / "m", lambda d: [
        p.unlink() for g in (*TOKENIZER_GLOBS, "tokenizer_config.json", "special_tokens_map.json") for p in d.glob(g)])
    res = cli("run", "-m", model, "-o", tmp_path / "out", *FAST)
    line = one_error_line(res, str(model), "no tokenizer files", "save_pretrained")
    assert "from one of:" not in line
    assert not (tmp_path / "out" / "runs").exists()


def test_a_library_message_is_kept_whole_on_one_line():
    """A library error whose useful part follows a line break keeps it (the first line alone was
    "Couldn't instantiate the backend tokenizer from one of:")."""
    from e3bench.backends.modelfiles import loader_error

    err = loader_error("/nowhere", ValueError("from one of:\n(1) a tokenizers file\n(2) a slow tokenizer"), what="read it")
    assert "(1) a tokenizers file (2) a slow tokenizer" in err.one_line() and "\n" not in err.one_line()


@pytest.mark.parametrize(
    ("content", "needle"),
    [pytest.param(b"", "bad magic bytes b''", id="A06-empty"), pytest.param(b"\xb8GUF" + b"\0" * 60, "bad magic", id="A12-bad-magic")],
)
def test_foreign_gguf_is_one_line(tmp_path, content, needle):
    """An empty ``.gguf`` and one with a flipped magic byte: one line (kept from before)."""
    f = tmp_path / "model.gguf"
    f.write_bytes(content)
    one_error_line(cli("run", "-m", f, "-o", tmp_path / "out", *FAST), str(f), needle)


def test_finetune_on_a_truncated_model_is_one_line(tiny_models, tmp_path):
    """``finetune`` reads models through the same loader: a truncated model.safetensors is one line."""
    name, damage = MODEL_DIR_CASES["A21-truncated-safetensors"]
    model = damaged(tiny_models["decoder"], tmp_path / "m", damage)
    data = tmp_path / "mc.jsonl"
    data.write_text(json.dumps({"query": "Is it blue?", "choices": ["no", "yes"], "gold": 1}) + "\n")
    res = cli("finetune", "-m", model, "--train-file", data, "--eval-file", data, "--max-steps", "1",
              "--meter", "none", "--idle-seconds", "0", "-o", tmp_path / "out")  # fmt: skip
    one_error_line(res, str(model / name))


def test_broken_onnx_model_is_one_line(tiny_models, tmp_path):
    """A user's ONNX folder whose ``model.onnx`` is garbage (onnxruntime raised its own exception
    type through the CLI)."""
    pytest.importorskip("onnxruntime")
    d = tmp_path / "onnx"
    shutil.copytree(tiny_models["decoder"], d)
    (d / "model.onnx").write_bytes(b"not a protobuf" * 10)
    res = cli("run", "-m", d, "-b", "onnxrt", "-o", tmp_path / "out", *FAST)
    one_error_line(res, str(d / "model.onnx"), "ONNX Runtime cannot load")


# --- 4. more files e3bench reads: its caches, data files ------------------------------------


def test_damaged_gguf_conversion_cache_names_the_entry(tiny_models, tmp_path):
    """The GGUF→safetensors cache is reused when its marker exists: a damaged entry (truncated
    weights) is one line saying which entry to delete, not a SafetensorError traceback."""
    from e3bench.backends.models import gguf_cache_dir, load_converted_gguf
    from e3bench.core.api import ModelSpec

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    spec = ModelSpec(name=str(gguf), source="gguf", path=str(tmp_path), gguf_file="m.gguf")
    entry = gguf_cache_dir(spec, str(tmp_path / "cache"))
    damaged(tiny_models["decoder"], entry, MODEL_DIR_CASES["A21-truncated-safetensors"][1])
    (entry / "e3bench-converted.json").write_text("{}")
    with pytest.raises(E3Error, match="truncated") as info:
        load_converted_gguf(spec, str(tmp_path / "cache"))
    assert f"delete the damaged cache entry {entry}" in info.value.fix


def test_damaged_onnx_cache_manifest_names_the_entry(tmp_path):
    """The ONNX export cache's manifest decides reuse: garbage in it is one E3Error naming the
    entry (was a JSONDecodeError traceback)."""
    from e3bench.backends.onnx_export import MANIFEST
    from e3bench.backends.onnxrt import OnnxRuntimeBackend

    d = tmp_path / "entry"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"x")
    (d / MANIFEST).write_text("{garbage")
    with pytest.raises(E3Error, match="damaged") as info:
        OnnxRuntimeBackend()._cached(d, "ONNX export")
    assert str(d / MANIFEST) in info.value.one_line() and str(d) in info.value.fix


@pytest.mark.parametrize(
    ("content", "needle"),
    [pytest.param(b"\xff\xfe\x00binary", "not UTF-8", id="binary"), pytest.param(b"[" * 100_000, "nested too deeply", id="deep")],
)
def test_binary_or_hostile_jsonl_is_one_error(tmp_path, content, needle):
    """Data files (``--train-file``, jsonl tasks): a binary file or a line nested 100,000 deep is
    one E3Error naming the file (was UnicodeDecodeError / RecursionError)."""
    from e3bench.evals.data import read_jsonl

    f = tmp_path / "d.jsonl"
    f.write_bytes(content)
    with pytest.raises(E3Error, match=needle) as info:
        read_jsonl(f)
    assert str(f) in info.value.one_line()


def test_damaged_llamacpp_quantization_cache_names_the_entry(tmp_path, monkeypatch):
    """llama.cpp's quantized copies are reused when the file exists: a damaged one is one line
    saying which entry to delete (it reached llama.cpp, whose failure said "check the GGUF file")."""
    from e3bench.backends import gguf_types
    from e3bench.backends.models import cache_root
    from e3bench.core.fsutil import file_key

    monkeypatch.setitem(sys.modules, "llama_cpp", type(sys)("llama_cpp"))  # never called: the cache hits
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 60)
    out = cache_root(str(tmp_path / "cache")) / "gguf-quantized" / file_key(src) / "Q8_0.gguf"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"")  # a copy cut short
    with pytest.raises(E3Error, match="not a GGUF file") as info:
        gguf_types.quantized(src, "f16", "q8_0", cache_dir=str(tmp_path / "cache"), threads=None)
    assert f"delete the damaged cache entry {out}" in info.value.fix


def test_damaged_vllm_quantization_cache_names_the_entry(tiny_models, tmp_path):
    """vLLM's llm-compressor copies are reused when their config.json exists: a damaged one is
    one line saying which entry to delete."""
    from e3bench.backends.models import cache_root
    from e3bench.backends.vllm import VllmBackend
    from e3bench.core.fsutil import dir_key

    src = tiny_models["decoder"]
    entry = cache_root(str(tmp_path)) / "llmcompressor" / dir_key(src) / "W8A8"
    damaged(src, entry, MODEL_DIR_CASES["A21-truncated-safetensors"][1])
    with pytest.raises(E3Error, match="truncated") as info:
        VllmBackend(cache_dir=str(tmp_path))._compressed(src, "int8", False)
    assert f"delete the damaged cache entry {entry}" in info.value.fix


def test_damaged_bandwidth_cache_is_measured_again(tmp_path, monkeypatch):
    """The roofline's bandwidth cache holding JSON that is not an object was an AttributeError
    traceback at the end of a run; now it is ignored and measured again."""
    from e3bench.bench import roofline

    class Remeasured(Exception):
        pass

    def measure(*_a, **_k):
        raise Remeasured

    monkeypatch.setattr(roofline, "measure_cpu_bandwidth", measure)
    monkeypatch.setattr(roofline, "quick_probe", lambda: 1e9)
    (tmp_path / "bandwidth.json").write_text("[1, 2]")
    with pytest.raises(Remeasured):
        roofline.cpu_bandwidth(tmp_path, "cpu", host="h")


def test_damaged_hub_cache_says_to_download_again(tiny_models, tmp_path):
    """A hub model whose cached copy is damaged (truncated weights in the Hugging Face cache,
    offline): one line with the cache fix, not a SafetensorError traceback and not "connect to
    the internet" (the model is cached; the copy is bad)."""
    repo = tmp_path / "hub" / "models--e3bench-test--tiny"
    snap = repo / "snapshots" / ("0" * 40)
    damaged(tiny_models["decoder"], snap, MODEL_DIR_CASES["A21-truncated-safetensors"][1])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "e3bench", "run", "-m", "e3bench-test/tiny", "-o", str(tmp_path / "out"), *FAST],
                         capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600)  # fmt: skip
    one_error_line(res, "e3bench-test/tiny", "SafetensorError", "Hugging Face cache")
