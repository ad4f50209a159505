"""The suite's model: a small Llama-style decoder (transformers ``LlamaForCausalLM`` built from
a config, random init) with optional multi-token prediction (MTP) heads.

MTP (Gloeckle et al. 2024, "Better & Faster Large Language Models via Multi-token Prediction";
DeepSeek-V3 uses a sequential variant): head ``j`` (j = 1..k) maps the trunk's final hidden state
at position t through its own residual block (RMSNorm → Linear(h, 2h) → SiLU → Linear(2h, h))
and a final RMSNorm, then through the *shared* output head, to predict token t + 1 + j. The
training loss is ``next-token loss + weight × mean(head losses)``. Validation loss is always the
plain next-token loss, so configurations compare on the same quantity.

Collider token filtering (:mod:`e3bench.train.shared.collider`, ``collider_threshold`` or
``collider_sparsity``): every linear layer of the decoder (and the output head) filters the
dropped tokens' rows in the backward pass; the optimised next-token loss, and each MTP head's
loss, is the mean over kept positions. The reported training loss stays the mean over all
tokens, comparable with configurations without filtering.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSettings:
    """Shape of the decoder (``[model]`` of a suite TOML file); ``seq_len`` is the training
    block length in tokens."""

    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate_size: int = 344
    seq_len: int = 128
    tie_embeddings: bool = True
    dropout: float = 0.0


def shape_problem(ms) -> tuple[str, str] | None:
    """``(problem, fix)`` for head counts of ``ms`` (:class:`ModelSettings` or the TOML's
    ``[model]``) that do not divide (hidden_size by heads, heads by kv_heads), or None: the one
    check, made when a suite file loads and again by :func:`build_model`."""
    if ms.hidden_size % ms.heads:
        return (f"model.hidden_size {ms.hidden_size} is not divisible by model.heads {ms.heads}",
                "choose heads that divide hidden_size")  # fmt: skip
    if ms.heads % ms.kv_heads:
        return f"model.heads {ms.heads} is not a multiple of model.kv_heads {ms.kv_heads}", "fix kv_heads"
    return None


def build_model(
    ms: ModelSettings, vocab_size: int, *, mtp_k: int = 0, mtp_weight: float = 0.3, seed: int = 0,
    collider_threshold: float | None = None, collider_sparsity: float | None = None,
):  # fmt: skip
    """A randomly initialised (``seed``) decoder with ``mtp_k`` MTP heads, with Collider token
    filtering when ``collider_threshold`` or ``collider_sparsity`` is given.

    The module's ``forward(block)`` takes token ids ``[B, T+1]`` and returns ``(loss to
    optimise, next-token loss, mean MTP head loss or None)`` — scalar tensors; in eval mode, or
    with ``mtp_k = 0``, the first two are the same and the third is None. ``embedding_ids()``
    gives the ids of the embedding and output-head weights (not hidden matrices, for Muon);
    ``collider_stats()`` the achieved sparsity (share of tokens dropped, mean over training
    forwards; share of activation rows skipped by backward GEMMs), or None without Collider.
    Raises :class:`~e3bench.core.errors.E3Error` for head counts that do not divide.
    """
    import torch
    from torch import nn
    from transformers import LlamaConfig, LlamaForCausalLM

    from e3bench.core.errors import E3Error
    from e3bench.train.shared import collider

    if (shape := shape_problem(ms)) is not None:
        raise E3Error(*shape)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=ms.hidden_size,
        intermediate_size=ms.intermediate_size,
        num_hidden_layers=ms.layers,
        num_attention_heads=ms.heads,
        num_key_value_heads=ms.kv_heads,
        max_position_embeddings=max(ms.seq_len, 64),
        tie_word_embeddings=ms.tie_embeddings,
        attention_dropout=ms.dropout,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    base = LlamaForCausalLM(cfg)

    class MTPHead(nn.Module):
        def __init__(self, h: int) -> None:
            super().__init__()
            self.norm_in = nn.RMSNorm(h, eps=1e-6)
            self.up = nn.Linear(h, 2 * h, bias=False)
            self.down = nn.Linear(2 * h, h, bias=False)
            self.norm_out = nn.RMSNorm(h, eps=1e-6)
            nn.init.normal_(self.up.weight, std=0.02)
            nn.init.zeros_(self.down.weight)  # starts as identity on the trunk's state

        def forward(self, x):
            return self.norm_out(x + self.down(nn.functional.silu(self.up(self.norm_in(x)))))

    class LM(nn.Module):
        """``forward(block)`` with ``block`` [B, T+1] → (loss to optimise, next-token loss, aux loss)."""

        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.mtp_k = mtp_k
            self.mtp_weight = mtp_weight
            self.mtp_heads = nn.ModuleList(MTPHead(ms.hidden_size) for _ in range(mtp_k))
            self.collider = None
            self._dropped: list[float] = []
            if collider_threshold is not None or collider_sparsity is not None:
                self.collider = collider.install(self.base)

        def _ce(self, logits, tgt):
            flat = nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                               reduction="none")  # fmt: skip
            return flat.view(tgt.shape)

        def forward(self, block):
            inp, tgt = block[:, :-1], block[:, 1:]
            h = self.base.model(input_ids=inp).last_hidden_state
            logits = self.base.lm_head(h)
            per_tok = self._ce(logits, tgt)
            main = per_tok.mean()
            filt = self.collider is not None and self.training and torch.is_grad_enabled()
            mask = None
            if filt:
                mask = collider.select_tokens(per_tok, threshold=collider_threshold, sparsity=collider_sparsity)
                self.collider.set(mask)
                self._dropped.append(1.0 - float(mask.float().mean()))
            opt_loss = collider.filtered_mean(per_tok, mask) if filt else main
            if not self.mtp_k or not self.training:
                return opt_loss, main, None
            aux = []
            T = inp.size(1)
            for j, head in enumerate(self.mtp_heads, start=1):
                if T - j <= 0:
                    break
                lj = self._ce(self.base.lm_head(head(h[:, : T - j])), tgt[:, j:])
                aux.append(collider.filtered_mean(lj, mask[:, : T - j]) if filt else lj.mean())
            aux_loss = torch.stack(aux).mean()
            return opt_loss + self.mtp_weight * aux_loss, main, aux_loss

        def collider_stats(self) -> dict | None:
            if self.collider is None:
                return None
            return {
                "token_sparsity": sum(self._dropped) / len(self._dropped) if self._dropped else None,
                "gemm_row_sparsity": self.collider.gemm_sparsity(),
                "filtered_layers": len(self.collider.layers),
            }

        def embedding_ids(self) -> set[int]:
            ids = {id(self.base.model.embed_tokens.weight), id(self.base.lm_head.weight)}
            return ids

        def enable_gradient_checkpointing(self) -> None:
            from e3bench.train.shared.memory import enable_checkpointing

            enable_checkpointing(self.base)

    return LM()
