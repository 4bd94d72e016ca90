"""Sample packing with SDPA: a packed row gives each of its samples the loss that sample gets alone.

    .venv/bin/python -m pytest tests/train/test_packing_sdpa.py -q

How axolotl 0.19 keeps packed samples apart under `attn_implementation: sdpa` (read in the venv):
utils/schemas/config.py `attn_decontaminates_packing` is true for sdpa, so core/builders/causal.py sets
`sample_packing_drop_attention_mask`, and core/trainers/base.py drops the `attention_mask` column of a
packed dataset; the multipack collator (utils/collators/batching.py V2BatchSamplerDataCollatorForSeq2Seq)
concatenates the samples with their own position_ids (0.. per sample). Without a 2D mask and without a KV
cache, transformers (masking_utils._preprocess_mask_arguments -> find_packed_sequence_indices) reads the
position_ids restarts and builds a block-diagonal causal mask; axolotl's loader sets `use_cache = False`
(loaders/utils.py check_model_config), which is what lets that happen: with a cache the mask is causal
over the whole row and samples see each other (the second control below). On CUDA bf16 with torch >= 2.10 axolotl routes the same rows through varlen_attn
(monkeypatch/attention/sdpa_varlen.py, cu_seqlens from the same position_ids) instead.

This test runs that path on the CPU in fp32: a tiny random Llama (the bundled tokenizer's vocabulary),
three FPB rows packed into one padded row by axolotl's own collator, the mask dropped as axolotl drops it,
and each sample's loss compared with its loss alone. Tolerance: 1e-5 absolute (fp32; the largest difference
measured: 9.5e-7, rows of 60/74/78 tokens packed into 256). A control with the position_ids squashed (one long sequence) must differ, so the test can fail.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import BUNDLED, FPB_TRAIN

torch = pytest.importorskip("torch")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoTokenizer

    from benchmarks.gpu_pod_model import tiny_llama

    if not (BUNDLED / "tokenizer.json").is_file():
        pytest.skip("the bundled model is not converted yet (make setup)")
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED)
    model = tiny_llama(len(tokenizer), attn_implementation="sdpa", seed=0).eval()
    model.config.use_cache = False  # as axolotl's loader sets it for training
    return tokenizer, model


def samples(tokenizer, n=3):
    rows = [json.loads(line) for line in FPB_TRAIN.read_text(encoding="utf-8").splitlines()[:n]]
    out = []
    for row in rows:
        prompt = tokenizer(f"{row['context']}\nAnswer: ", add_special_tokens=False)["input_ids"]
        target = tokenizer(row["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = prompt + target
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                    "labels": [-100] * len(prompt) + target,  # train_on_inputs: false
                    "position_ids": list(range(len(ids)))})
    return out


def segment_loss(logits, labels):
    """Mean next-token loss of one sample, as the trainer computes it (shift inside the sample)."""
    return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=-100)


def packed_losses(model, batch, lengths, use_cache=False):
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=use_cache).logits[0]
    losses, start = [], 0
    for n in lengths:
        losses.append(segment_loss(logits[start:start + n], batch["labels"][0, start:start + n]).item())
        start += n
    return losses


def test_each_packed_sample_gets_its_loss_alone(tiny):
    from axolotl.utils.collators import V2BatchSamplerDataCollatorForSeq2Seq

    tokenizer, model = tiny
    feats = samples(tokenizer)
    lengths = [len(f["input_ids"]) for f in feats]
    alone = []
    with torch.no_grad():
        for f in feats:
            ids = torch.tensor([f["input_ids"]])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
            alone.append(segment_loss(logits, torch.tensor(f["labels"])).item())

    # one bin of three samples, padded to a multiple of 64 like pad_to_sequence_len does to sequence_len
    collator = V2BatchSamplerDataCollatorForSeq2Seq(tokenizer=tokenizer, padding="longest", pad_to_multiple_of=64,
                                                    return_tensors="pt")
    batch = collator([feats])
    assert batch["input_ids"].shape[1] % 64 == 0 and batch["input_ids"].shape[1] > sum(lengths)  # padding present
    assert batch["attention_mask"].max().item() == 3  # the collator numbers the samples 1, 2, 3 ...
    del batch["attention_mask"]  # ... and axolotl drops that mask for sdpa packing (sample_packing_drop_attention_mask)

    packed = packed_losses(model, batch, lengths)
    assert packed == pytest.approx(alone, abs=TOLERANCE)

    # control: the same tokens as one long sequence (position ids not restarted) attend across samples
    squashed = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])
    leaked = packed_losses(model, squashed, lengths)
    assert leaked[0] == pytest.approx(alone[0], abs=TOLERANCE)  # the first sample has nothing before it
    assert abs(leaked[1] - alone[1]) > 100 * TOLERANCE and abs(leaked[2] - alone[2]) > 100 * TOLERANCE
    # control: with a KV cache transformers does not look for packed rows, so samples attend across
    cached = packed_losses(model, batch, lengths, use_cache=True)
    assert abs(cached[1] - alone[1]) > 100 * TOLERANCE and abs(cached[2] - alone[2]) > 100 * TOLERANCE
