"""BERTScore with a local encoder folder only (never a hub download).

    python -m eval lora_adapters/ --tasks xbrl_term --bertscore-model /path/to/finbert

The core of BERTScore (Zhang et al. 2020): contextual token embeddings of candidate and reference,
cosine similarity, greedy matching; P = mean over candidate tokens of the best match, R = mean over
reference tokens, F1 = 2PR/(P+R). Simplifications, stated so numbers are not compared with the
bert-score package's blindly: last hidden layer (bert-score picks a per-model layer), no idf weighting,
no baseline rescaling. Special tokens are excluded. An empty candidate or reference scores 0.
FinLoRA uses the bert-score package with ProsusAI/finbert; give a local copy of that folder to match
its encoder.
"""
from __future__ import annotations


def bertscore(candidates: list[str], references: list[str], model_path: str, batch_size: int = 16) -> list[float]:
    """F1 per pair."""
    return [f for _, _, f in bertscore_prf(candidates, references, model_path, batch_size)]


def bertscore_prf(candidates: list[str], references: list[str], model_path: str,
                  batch_size: int = 16) -> list[tuple[float, float, float]]:
    """(precision, recall, F1) per pair."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True, trust_remote_code=False)
    model = AutoModel.from_pretrained(model_path, local_files_only=True, trust_remote_code=False).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    limit = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)

    def embed(texts: list[str]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=limit, return_special_tokens_mask=True)
            special = enc.pop("special_tokens_mask").bool()
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state.float()
            keep = enc["attention_mask"].bool() & ~special
            for h, k in zip(hidden, keep, strict=True):
                out.append(torch.nn.functional.normalize(h[k], dim=-1))
        return out

    scores: list[tuple[float, float, float]] = []
    for c, r in zip(embed([c.strip() for c in candidates]), embed([r.strip() for r in references]), strict=True):
        if len(c) == 0 or len(r) == 0:
            scores.append((0.0, 0.0, 0.0))
            continue
        sim = c @ r.T
        p, rec = sim.max(dim=1).values.mean().item(), sim.max(dim=0).values.mean().item()
        scores.append((p, rec, 0.0 if p + rec <= 0 else 2 * p * rec / (p + rec)))
    return scores
