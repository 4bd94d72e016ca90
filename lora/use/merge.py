"""Merge a LoRA adapter into its base and save a standalone model, verified against the adapter.

    finlora merge sentiment_smollm2_cpu                        # -> merged/sentiment_smollm2_cpu (bf16)
    finlora merge lora_adapters/x --out /tmp/x-merged --dtype fp32 --verify-rows 64
    finlora merge x --checkpoint latest                        # an unfinished run's newest checkpoint

What it does, in order (decide, then do):
  plan     the adapter (NAME = lora_adapters/NAME, or a folder), its base (as eval resolves it; never
           downloaded), its training prompt (run.json prompt_format), the dtype, the out folder, and the
           verification rows: the first rows of the adapter's own tasks (eval/adapter_tasks.py family ->
           tasks whose data file exists; fpb when none), shared round-robin between the tasks.
  merge    the base is loaded UNQUANTIZED in fp32 from its own folder, even when training loaded it in
           4/8-bit: bitsandbytes layers cannot take a merge (bitsandbytes #430), and merging into the
           dequantized NF4/int8 weights would bake the quantization error into a full-precision model.
           The adapter is attached (every weight checked to land, eval/engine.py), answers the rows
           (reference), is merged with peft's merge_and_unload(safe_merge=True) in fp32 (DoRA and
           rsLoRA included: peft folds the magnitude vector and the alpha/sqrt(r) scale), then cast to
           --dtype and saved as safetensors with the base's tokenizer (the fixed EOS), a chat template
           that renders the training prompt, and merge.json (the provenance record).
  verify   the saved folder is loaded back the way eval loads a base and answers the same rows greedily
           (eval/generation.py generate, the same stop rules as eval). Agreement = identical answers / rows.
           Below --min-agreement (fp32: 1.0; bf16/fp16: 0.9) it exits 1 with the number and keeps
           nothing. A 4/8-bit-trained adapter is also run on its 4/8-bit base (as trained) and the
           merged model's agreement with that is recorded and printed (--min-quant-agreement gates it).
  publish  everything is written into a temp folder beside --out and renamed into place only when
           verified: there is never a half-merged folder at --out.

Bad input is one `error:` line and exit 2, with nothing written (lora/core/errors.py).
"""
from __future__ import annotations

import gc
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

from eval.adapter_tasks import FAMILY_TASKS
from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, library_versions, repo_relative, utc_now_iso, write_json_atomic
from lora.core.noise import quiet_library_noise
from lora.core.prompts import apply
from lora.use.adapter_ref import AdapterRef, resolve

DTYPES = ("bf16", "fp16", "fp32")
# The accepted share of verification rows whose greedy answer is identical. fp32: the merged weight
# W + s·BA differs from computing x·W + s·x·A·B only by float32 summation order (~1e-6 relative), far
# below any real gap between the top two logits, so any disagreement is a merge bug. bf16/fp16: saving
# rounds every weight to 8/11 mantissa bits (~0.4%/0.05% relative), which moves logits by ~1e-2 and can
# flip a near-tie between two tokens and with it the rest of that answer; 0.9 lets 1 row in 10 flip,
# while a wrong merge (scale, DoRA magnitude, missing module) disagrees on most rows (docs/use.md).
MIN_AGREEMENT = {"fp32": 1.0, "bf16": 0.9, "fp16": 0.9}
DEFAULT_VERIFY_ROWS = 32
DEFAULT_MIN_QUANT_AGREEMENT = 0.0  # recorded and printed; a gate only when asked (docs/use.md)
FALLBACK_TASK = "fpb"
MERGE_JSON = "merge.json"
MERGED_DIR = REPO_ROOT / "merged"


@dataclass(frozen=True)
class VerifyRow:
    task: str
    row_id: int
    prompt: str  # the training prompt around the row's context
    max_new_tokens: int  # the task's budget, as eval uses it
    stop_at_newline: bool  # the task kind's rule, as eval uses it


@dataclass(frozen=True)
class MergePlan:
    adapter: AdapterRef
    out: Path
    dtype: str
    force: bool
    rows: tuple[VerifyRow, ...]
    tasks: tuple[str, ...]
    min_agreement: float
    min_quant_agreement: float
    batch_size: int
    command: str


# ---------------------------------------------------------------- decide (pure)


def verify_tasks(family_tasks: tuple[str, ...], available: set[str]) -> tuple[str, ...]:
    """The adapter's own tasks that can be run here, else the fallback."""
    own = tuple(t for t in family_tasks if t in available)
    return own or (FALLBACK_TASK,)


def pick_rows(per_task: dict[str, list[VerifyRow]], n: int) -> list[VerifyRow]:
    """n rows taken round-robin from the tasks' first rows (so every task is represented), in task order."""
    queues = {t: list(rows) for t, rows in per_task.items()}
    picked: list[VerifyRow] = []
    while len(picked) < n and any(queues.values()):
        for rows in queues.values():
            if rows and len(picked) < n:
                picked.append(rows.pop(0))
    return picked


def agreement(reference: list[str], merged: list[str]) -> tuple[float, list[int]]:
    """Share of identical answers (surrounding whitespace ignored) and the indices that differ."""
    differ = [i for i, (a, b) in enumerate(zip(reference, merged, strict=True)) if a.strip() != b.strip()]
    return (1 - len(differ) / len(reference)) if reference else 1.0, differ


def chat_template(template: str, bos_expr: str = "") -> str:
    """A Jinja chat template that renders a user turn exactly as training's prompt did (so a server using
    the merged folder's template asks what the adapter learnt, not the base's template: axolotl #1832),
    an assistant turn as its text + EOS (what training appended), and a system message as a paragraph
    before the next user text (the prompt has no system slot)."""
    prefix, suffix = template.split("{context}", 1)
    return (
        "{%- set P = " + json.dumps(prefix) + " -%}{%- set S = " + json.dumps(suffix) + " -%}"
        "{%- set ns = namespace(system='') -%}" + bos_expr +
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'system' -%}{%- set ns.system = ns.system + m['content'] + '\\n\\n' -%}"
        "{%- elif m['role'] == 'user' -%}{{ P + ns.system + m['content'] + S }}{%- set ns.system = '' -%}"
        "{%- elif m['role'] == 'assistant' -%}{{ m['content'] + eos_token }}"
        "{%- endif -%}{%- endfor -%}"
    )


def default_out(adapter: AdapterRef) -> Path:
    suffix = f"-{adapter.checkpoint}" if adapter.checkpoint else ""
    return MERGED_DIR / f"{adapter.run_dir.name}{suffix}"


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out}: exists and is not empty (--force replaces it, only once the new merge is verified)")
    parent = out.parent if out.parent != Path("") else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UserError(f"--out {out}: cannot write into {parent}")


def load_rows(adapter: AdapterRef, n: int) -> tuple[tuple[str, ...], list[VerifyRow]]:
    """The verification rows (file reads: the task registry and the tasks' test files)."""
    from eval.tasks import has_data, load_registry, load_task_data

    registry = load_registry()
    family_tasks = FAMILY_TASKS.get(adapter.family.name or "", ())
    tasks = verify_tasks(family_tasks, {t for t, task in registry.items() if has_data(task)})
    per_task: dict[str, list[VerifyRow]] = {}
    for t in tasks:
        task = registry[t]
        data = load_task_data(task).head(n)
        per_task[t] = [VerifyRow(t, r["id"], apply(adapter.template, r["context"]), task.max_new_tokens,
                                 task.kind.stop_at_newline) for r in data.rows]
    return tasks, pick_rows(per_task, n)


def plan(args: Namespace) -> MergePlan:
    if args.verify_rows < 1:
        raise UserError("--verify-rows must be at least 1: a merge is never saved unverified")
    if args.batch_size < 1:
        raise UserError("--batch-size must be a positive integer")
    for flag, v in (("--min-agreement", args.min_agreement), ("--min-quant-agreement", args.min_quant_agreement)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise UserError(f"{flag} {v}: must be between 0 and 1")
    adapter = resolve(args.adapter, args.checkpoint, args.base_model, args.prompt_format, prog="finlora merge")
    out = Path(args.out).expanduser() if args.out else default_out(adapter)
    check_out(out, args.force)
    tasks, rows = load_rows(adapter, args.verify_rows)
    return MergePlan(
        adapter=adapter, out=out, dtype=args.dtype, force=args.force, rows=tuple(rows), tasks=tasks,
        min_agreement=args.min_agreement if args.min_agreement is not None else MIN_AGREEMENT[args.dtype],
        min_quant_agreement=args.min_quant_agreement, batch_size=args.batch_size,
        command=shlex.join(args.invocation),
    )


# ---------------------------------------------------------------- do (models, files)


def answer_rows(model, tokenizer, rows: tuple[VerifyRow, ...], batch_size: int) -> list[str]:
    """Greedy answers with eval's generation (eval/generation.py), grouped by each task's budget and stop rule."""
    from eval.generation import generate

    out: list[str | None] = [None] * len(rows)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.max_new_tokens, r.stop_at_newline), []).append(i)
    for (budget, stop), idx in groups.items():
        texts, _ = generate(model, tokenizer, [rows[i].prompt for i in idx], budget, stop, batch_size)
        for i, t in zip(idx, texts, strict=True):
            out[i] = t
    return [o or "" for o in out]


def _free() -> None:
    """Return what the dropped models held (call after `del`: collection cannot free what is still named)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _adapter_answers(p: MergePlan, quant: int | None, dtype=None):
    """(loaded base with the adapter attached, its answers)."""
    from eval.engine import AdapterHost, load_base

    loaded = load_base(p.adapter.base_path, quant, dtype=dtype)
    host = AdapterHost(loaded)
    host.attach("adapter", str(p.adapter.weights_dir))
    return loaded, host.peft_model, answer_rows(host.peft_model, loaded.tokenizer, p.rows, p.batch_size)


@dataclass
class Outcome:
    agreement: float
    differ: list[int]
    quant_agreement: float | None = None
    quant_differ: list[int] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    chat_template_ok: bool | None = None
    examples: list = field(default_factory=list)  # a few differing answers, for merge.json
    quant_examples: list = field(default_factory=list)
    adapter_changes: int | None = None  # rows where the adapter's answer differs from the base's


def merge_into(p: MergePlan, staging: Path) -> tuple[list[str], list[str] | None, list[str], dict]:
    """Write the merged model into `staging`; return the answers of the adapter on the fp32 base
    (reference), of the adapter on its 4/8-bit base (None for a full-precision run), of the base alone,
    and timings."""
    import torch

    from eval.generation import eos_ids

    seconds: dict = {}
    quant_answers = None
    if p.adapter.quant:
        t = time.monotonic()
        loaded, pm, quant_answers = _adapter_answers(p, p.adapter.quant)
        del loaded, pm
        _free()
        seconds[f"reference_{p.adapter.quant}bit"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    loaded, pm, reference = _adapter_answers(p, None, dtype=torch.float32)
    with pm.disable_adapter():  # how many answers the adapter changes: agreement means little if none
        base_answers = answer_rows(pm, loaded.tokenizer, p.rows, p.batch_size)
    seconds["reference_fp32"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    merged = pm.merge_and_unload(safe_merge=True)  # safe_merge: refuses NaN/inf merged weights
    merged.to({"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[p.dtype])
    stops = eos_ids(loaded.tokenizer, merged)
    merged.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    merged.save_pretrained(str(staging), safe_serialization=True)
    tok = loaded.tokenizer
    lead = tok("")["input_ids"]
    bos = "{{ bos_token }}" if lead and lead == [tok.bos_token_id] else ""
    tok.chat_template = chat_template(p.adapter.template, bos)
    tok.save_pretrained(str(staging))
    seconds["merge_and_save"] = round(time.monotonic() - t, 2)
    del merged, pm, loaded, tok
    _free()
    return reference, quant_answers, base_answers, seconds


def verify(p: MergePlan, staging: Path, reference: list[str], quant_answers: list[str] | None) -> Outcome:
    from eval.engine import load_base

    t = time.monotonic()
    loaded = load_base(str(staging))  # as eval would load it: fp32 on CPU, the saved dtype on CUDA
    merged_answers = answer_rows(loaded.model, loaded.tokenizer, p.rows, p.batch_size)
    rate, differ = agreement(reference, merged_answers)
    out = Outcome(rate, differ)
    if quant_answers is not None:
        out.quant_agreement, out.quant_differ = agreement(quant_answers, merged_answers)
        out.quant_examples = [{"task": p.rows[i].task, "id": p.rows[i].row_id, "quantized_base": quant_answers[i],
                               "merged": merged_answers[i]} for i in out.quant_differ[:5]]
    out.chat_template_ok = chat_template_matches(loaded.tokenizer, p)
    out.seconds["verify"] = round(time.monotonic() - t, 2)
    out.examples = [{"task": p.rows[i].task, "id": p.rows[i].row_id, "adapter": reference[i], "merged": merged_answers[i]}
                    for i in differ[:5]]
    del loaded
    _free()
    return out


def chat_template_matches(tokenizer, p: MergePlan) -> bool:
    """The saved chat template tokenizes a user turn to the training prompt's tokens."""
    context = "Is revenue up?"
    text = tokenizer.apply_chat_template([{"role": "user", "content": context}], tokenize=False)
    return (list(tokenizer(text, add_special_tokens=False)["input_ids"])
            == list(tokenizer(apply(p.adapter.template, context))["input_ids"]))


def record(p: MergePlan, o: Outcome, accepted: bool) -> dict:
    a = p.adapter
    return {
        "merged_at": utc_now_iso(),
        "command": p.command,
        "adapter": {"name": a.name, "path": repo_relative(a.weights_dir), "checkpoint": a.checkpoint,
                    "run_json_sha256": a.run_sha256, "prompt_format": a.prompt_format, "template": a.template,
                    "training_quant_bits": a.quant or 16, "family": a.family.name},
        "base": {"ref": a.base_ref, "path": repo_relative(a.base_path),
                 "merged_into": "full-precision base loaded in fp32 (no quantization), merged in fp32"},
        "dtype": p.dtype,
        "verification": {
            "rows": len(p.rows), "tasks": list(p.tasks), "agreement": o.agreement, "min_agreement": p.min_agreement,
            "reference": "adapter on the fp32 base (unmerged), greedy, eval's stop rules",
            "differing_rows": [{"task": p.rows[i].task, "id": p.rows[i].row_id} for i in o.differ],
            "examples": o.examples,
            "quant_agreement": o.quant_agreement, "quant_examples": o.quant_examples, "min_quant_agreement": p.min_quant_agreement if a.quant else None,
            "quant_reference": f"adapter on the {a.quant}-bit base (as trained)" if a.quant else None,
            "rows_the_adapter_changes_vs_base": o.adapter_changes,
            "chat_template_matches_training_prompt": o.chat_template_ok,
            "accepted": accepted,
        },
        "seconds": o.seconds,
        "versions": library_versions(("torch", "transformers", "peft", "bitsandbytes", "safetensors")),
    }


def publish(staging: Path, out: Path) -> None:
    """Rename the verified folder into place; an old --out (--force) is moved aside first, then removed."""
    old = None
    if out.exists() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "x")
    elif out.exists():
        out.rmdir()
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def execute(p: MergePlan, log=print) -> int:
    a = p.adapter
    log(f"merging {a.describe()} -> {p.out} ({p.dtype}); verifying on {len(p.rows)} rows of {', '.join(p.tasks)}",
        file=sys.stderr)
    t0 = time.monotonic()
    p.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=p.out.parent, prefix=f".{p.out.name}.partial-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; the published folder is an ordinary one
    try:
        reference, quant_answers, base_answers, seconds = merge_into(p, staging)
        o = verify(p, staging, reference, quant_answers)
        o.adapter_changes = len(agreement(base_answers, reference)[1])
        o.seconds = {**seconds, **o.seconds, "total": round(time.monotonic() - t0, 2)}
        ok = o.agreement >= p.min_agreement and (o.quant_agreement is None or o.quant_agreement >= p.min_quant_agreement)
        rec = record(p, o, ok)
        n = len(p.rows)
        line = (f"agreement {o.agreement:.3f} ({n - len(o.differ)}/{n} rows identical; accepted >= {p.min_agreement:g}; "
                f"the adapter changes {o.adapter_changes}/{n} answers of the base)")
        if o.quant_agreement is not None:
            line += (f"; vs the adapter on its {a.quant}-bit base {o.quant_agreement:.3f} "
                     f"({n - len(o.quant_differ)}/{n})")
        if not ok:
            print(f"merge rejected: {line}; nothing written", file=sys.stderr)
            return 1
        write_json_atomic(staging / MERGE_JSON, rec)
        publish(staging, p.out)
        print(f"{line}; saved {p.out} in {o.seconds['total']:.1f} s", file=sys.stderr)
        print(p.out)
        return 0
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def quiet() -> None:
    quiet_library_noise()
    from eval.engine import disable_progress_bars

    disable_progress_bars()
