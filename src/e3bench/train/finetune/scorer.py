"""Per-choice scores of a model under training: the batches and forward passes that turn
``{query, choices, gold}`` items into a ``[B, C]`` score matrix whose cross-entropy against the
gold answer is the training loss (see :mod:`e3bench.train.finetune` for each architecture).

Why not the backends' log-likelihood (``backends.hf_scorer``, ``Backend.loglikelihood``): those
score a loaded ``Backend`` without gradients and return floats per request; training needs the
scores as tensors in the autograd graph, batched and padded for the optimizer step, plus the
classification-head and verbalizer modes that are not log-likelihoods at all. The choices-mode
sum of log p(" " + choice | query) of decoders is the same quantity as lm-eval's ``acc``, and it
is tokenized by the same helper (``backends.tokenization.encode_pair``), so the two agree (tested).
"""

from __future__ import annotations

from e3bench.train.finetune.model import Loaded

PROMPT_SUFFIX = "\nAnswer:"
#: the line that starts an item's second segment in e3bench's task layouts (BoolQ ``Passage: ..
#: \nQuestion: ..?``, RTE/CB ``{premise}\nQuestion: {hypothesis} ..``, WiC, WSC, MultiRC)
QUESTION_MARK = "\nQuestion:"


def text_pair(query: str) -> tuple[str, str] | None:
    """(question, context) of a query with two segments: the text from its last
    ``\nQuestion:`` on, and the text before it; None when it has no such line or nothing
    before it. An encoder reads the pair as ``[CLS] question [SEP] context [SEP]`` (BERT's
    sentence-pair input, the two token types): truncation cuts the context's end, never the
    question, and the model sees where one segment ends."""
    cut = query.rfind(QUESTION_MARK)
    if cut <= 0 or not query[:cut].strip():
        return None
    return query[cut + 1 :].strip(), query[:cut].strip()


class Scorer:
    """Builds batches and turns model outputs into per-choice scores [B, C] (see module doc).

    Encoders in labels mode read a two-segment query as the pair :func:`text_pair` (the context
    is truncated, the question kept); other queries longer than ``max_len`` tokens keep their
    end (a question is last); a choice keeps at most ``max_len // 2`` tokens. Encoders classify
    on the pooling their folder declares (:func:`~e3bench.train.finetune.model.pooled_logits`).
    """

    def __init__(self, ld: Loaded, max_len: int, device: str) -> None:
        self.ld = ld
        self.tok = ld.tokenizer
        self.max_len = max_len
        self.device = device
        self.pad = self.tok.pad_token_id

    # -- tokenisation helpers
    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=special)["input_ids"])

    def _left_trunc(self, ids: list[int], room: int) -> list[int]:
        if len(ids) <= room:
            return ids
        bos = self.tok.bos_token_id
        keep_first = bos is not None and ids and ids[0] == bos
        return ([ids[0]] if keep_first else []) + ids[len(ids) - room + int(keep_first) :]

    def _pad(self, seqs: list[list[int]], value: int, *, left: bool = False):
        import torch

        n = max(len(s) for s in seqs)
        out = torch.full((len(seqs), n), value, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            sl = slice(n - len(s), n) if left else slice(0, len(s))
            out[i, sl] = torch.tensor(s, dtype=torch.long)
            mask[i, sl] = 1
        return out, mask

    # -- scoring
    def scores(self, model, rows: list[dict]):
        """Return (scores [B, C] float32 on the device, non-padding tokens processed (int),
        gold indices [B] long). Padded choices of items with fewer choices score -inf."""
        import torch

        gold = torch.tensor([r["gold"] for r in rows], dtype=torch.long, device=self.device)
        arch, mode = self.ld.architecture, self.ld.mode
        if arch == "encoder-only":
            return (*self._encoder(model, rows, mode), gold)
        if mode == "labels":
            return (*self._verbalizer(model, rows), gold)
        return (*self._sequence(model, rows), gold)

    def _encoder(self, model, rows, mode):
        from e3bench.train.finetune.model import pooled_logits

        tok = self.tok
        tok.truncation_side = "right"
        if mode == "labels":
            split = [text_pair(r["query"]) for r in rows]
            if all(split):  # (question, context): the context gives way to the length limit
                first, second = [p[0] for p in split], [p[1] for p in split]
                enc = tok(first, second, truncation="longest_first", max_length=self.max_len, padding=True, return_tensors="pt")
            else:
                tok.truncation_side = "left"  # one segment: keep the end (a question is last)
                enc = tok([r["query"] for r in rows], truncation=True, max_length=self.max_len, padding=True, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            logits = pooled_logits(self.ld, model, enc).float()
            return logits, int(enc["attention_mask"].sum())
        pairs_q, pairs_c, owner = [], [], []
        for i, r in enumerate(rows):
            for c in r["choices"]:
                pairs_q.append(r["query"])
                pairs_c.append(c)
                owner.append(i)
        tok.truncation_side = "left"  # keep the end of the query, next to the choice
        enc = tok(pairs_q, pairs_c, truncation="only_first", max_length=self.max_len, padding=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        flat = pooled_logits(self.ld, model, enc).float().squeeze(-1)
        return self._regroup(flat, rows), int(enc["attention_mask"].sum())

    def _regroup(self, flat, rows):
        import torch

        c_max = max(len(r["choices"]) for r in rows)
        out = torch.full((len(rows), c_max), float("-inf"), device=flat.device)
        k = 0
        for i, r in enumerate(rows):
            n = len(r["choices"])
            out[i, :n] = flat[k : k + n]
            k += n
        return out

    def _verbalizer(self, model, rows):
        import torch

        ids_list = []
        for r in rows:
            if self.ld.architecture == "decoder-only":
                ids = self._left_trunc(self._ids(r["query"] + PROMPT_SUFFIX, True), self.max_len)
            else:
                ids = self._ids(r["query"] + PROMPT_SUFFIX, True)
                if len(ids) > self.max_len:  # keep the end (question) and the closing special token
                    ids = ids[len(ids) - self.max_len :]
            ids_list.append(ids)
        decoder = self.ld.architecture == "decoder-only"
        # decoders: left padding, so the last position is every row's last prompt token and only
        # its logits are computed (logits_to_keep=1; RoPE positions are relative, so the shift
        # from left padding does not change the scores)
        inp, mask = self._pad(ids_list, self.pad, left=decoder)
        inp, mask = inp.to(self.device), mask.to(self.device)
        label_ids = torch.tensor(self.ld.label_token_ids, device=self.device)
        if decoder:
            kw = {"logits_to_keep": 1} if self.ld.supports_logits_to_keep else {}
            logits = model(input_ids=inp, attention_mask=mask, **kw).logits
            return logits[:, -1].float()[:, label_ids], int(mask.sum())
        start = model.config.decoder_start_token_id
        if start is None:
            start = self.pad
        dec = torch.full((len(rows), 1), start, dtype=torch.long, device=self.device)
        logits = model(input_ids=inp, attention_mask=mask, decoder_input_ids=dec).logits
        return logits[:, 0].float()[:, label_ids], int(mask.sum()) + len(rows)

    def _sequence(self, model, rows):
        import torch

        arch = self.ld.architecture
        flat_ctx, flat_cont = [], []
        for r in rows:
            for c in r["choices"]:
                flat_ctx.append(r["query"])
                flat_cont.append(c)
        if arch == "decoder-only":
            from e3bench.backends.tokenization import encode_pair

            seqs, cont_mask = [], []
            for q, c in zip(flat_ctx, flat_cont, strict=True):
                # lm-eval's (context, continuation) tokens, as the backends score them; the
                # truncation is ours: a fixed budget per sequence, the choice kept whole first
                q_ids, c_ids = encode_pair(self.tok, q, " " + c)
                c_ids = c_ids[: self.max_len // 2]
                q_ids = self._left_trunc(q_ids, self.max_len - len(c_ids))
                seqs.append(q_ids + c_ids)
                cont_mask.append([0] * len(q_ids) + [1] * len(c_ids))
            inp, mask = self._pad(seqs, self.pad)
            cm, _ = self._pad(cont_mask, 0)
            inp, mask, cm = inp.to(self.device), mask.to(self.device), cm.to(self.device)
            logits = model(input_ids=inp, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, inp[:, 1:, None]).squeeze(-1)
            flat = (logp * cm[:, 1:]).sum(1)
            return self._regroup(flat, rows), int(mask.sum())
        # encoder-decoder: query → encoder, choice → decoder target
        enc_ids = []
        for q in flat_ctx:
            ids = self._ids(q, True)
            enc_ids.append(ids[len(ids) - self.max_len :] if len(ids) > self.max_len else ids)
        tgt = [self._ids(c, True)[: self.max_len // 2] for c in flat_cont]
        inp, mask = self._pad(enc_ids, self.pad)
        lab, lmask = self._pad(tgt, self.pad)
        start = model.config.decoder_start_token_id
        if start is None:
            start = self.pad
        dec = torch.cat([torch.full((lab.size(0), 1), start, dtype=torch.long), lab[:, :-1]], 1)
        inp, mask, lab, lmask, dec = (t.to(self.device) for t in (inp, mask, lab, lmask, dec))
        logits = model(input_ids=inp, attention_mask=mask, decoder_input_ids=dec).logits.float()
        logp = torch.log_softmax(logits, -1).gather(-1, lab[..., None]).squeeze(-1)
        flat = (logp * lmask).sum(1)
        return self._regroup(flat, rows), int(mask.sum()) + int(lmask.sum())
