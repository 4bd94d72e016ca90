"""Ask a trained adapter (or its base) something, with the prompt it was trained on.

    finlora infer sentiment_smollm2_cpu "Operating profit rose to EUR 13.1 mn."
    finlora infer sentiment_smollm2_cpu --base "Operating profit rose to EUR 13.1 mn."   # the base alone
    finlora infer lora_adapters/x --file questions.jsonl --out answers.jsonl
    finlora infer sentiment_smollm2_cpu --chat                                          # streamed, line by line
    finlora infer merged/sentiment_smollm2_cpu "..."                                    # a finlora merge folder

The text is wrapped in run.json's prompt_format (what training used, so the adapter is asked what it
learnt: axolotl #1832), tokenised and generated exactly as eval does (eval/engine.py: load_base,
AdapterHost; eval/generation.py: generate; greedy). Generation stops at the tokenizer's EOS (the token
training appended after every answer). One-line rule: for an adapter whose tasks all have one-line answers (sentiment,
headline: classification/numeric kinds in eval), generation also stops at the newline after the answer's
first text, as eval scores it; otherwise (free text, unknown family) only EOS or --max-new-tokens stop
it. --one-line / --no-one-line override. --chat asks each line on its own (training prompts are single
turns, so no history is sent) and streams the tokens (TextIteratorStreamer); an empty line or EOF ends it.
The base is loaded as eval loads it (full precision; --quant 4|8|16 as eval's --base-quant).
"""
from __future__ import annotations

import json
import sys
import threading
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

from eval.adapter_tasks import FAMILY_TASKS
from lora.core.errors import UserError
from lora.core.files import read_json, write_atomic
from lora.core.jsonl import read_jsonl
from lora.core.prompts import apply
from lora.use.adapter_ref import AdapterRef, adapter_folder, resolve
from lora.use.merge import MERGE_JSON

DEFAULT_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class Merged:
    """A lora.use.merge output folder: a whole model, its training prompt in merge.json."""
    path: Path
    template: str
    prompt_format: str
    family: str | None


@dataclass(frozen=True)
class InferPlan:
    model_path: str  # the folder loaded as the base
    adapter: AdapterRef | None  # None: a merged folder
    merged: Merged | None
    use_base: bool  # --base: ask the base with adapters off
    template: str
    one_line: bool
    max_new_tokens: int
    quant: int | None
    mode: str  # text | file | chat
    text: str | None = None
    rows: tuple[dict, ...] = ()
    out: Path | None = None


def one_line_for(family: str | None) -> bool:
    """True when every task of the adapter's family stops at the newline in eval (its kind's rule)."""
    from eval.tasks import load_registry

    tasks = FAMILY_TASKS.get(family or "", ())
    registry = load_registry()
    kinds = [registry[t].kind for t in tasks if t in registry]
    return bool(kinds) and all(k.stop_at_newline for k in kinds)


def read_rows(path: Path) -> tuple[dict, ...]:
    """{"context"} or {"text"} rows; every line is checked before a model loads (file:line on error)."""
    rows = []
    for lineno, obj in read_jsonl(path, (), "--file"):
        text = obj.get("context", obj.get("text"))
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{path}:{lineno}: needs a non-empty \"context\" or \"text\" string")
        rows.append(obj)
    if not rows:
        raise UserError(f"{path}: no rows")
    return tuple(rows)


def merged_folder(arg: str) -> Merged | None:
    try:
        folder = adapter_folder(arg)
    except UserError:
        return None
    rec_path = folder / MERGE_JSON
    if not rec_path.is_file():
        return None
    rec = read_json(rec_path, MERGE_JSON)  # a damaged file is one error line, not a traceback
    a = rec["adapter"]
    return Merged(folder, a["template"], a["prompt_format"], a.get("family"))


def plan(args: Namespace) -> tuple[InferPlan, int]:
    modes = [m for m, on in (("text", args.text is not None), ("file", args.file is not None), ("chat", args.chat)) if on]
    if len(modes) != 1:
        raise UserError("give exactly one of: a text, --file FILE --out FILE, or --chat")
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise UserError("--max-new-tokens and --batch-size must be positive integers")
    if (args.file is None) != (args.out is None):
        raise UserError("--file and --out go together")
    out = None
    rows: tuple[dict, ...] = ()
    if args.file is not None:
        out = Path(args.out).expanduser()
        if out.exists() and not args.force:
            raise UserError(f"--out {out}: exists (--force replaces it)")
        if out.exists() and out.is_dir():
            raise UserError(f"--out {out}: is a folder")
        rows = read_rows(Path(args.file).expanduser())
    merged = merged_folder(args.adapter) if args.checkpoint is None else None
    if merged is not None:
        if args.base:
            raise UserError("--base: a merged folder has no separate base; run --base on the adapter")
        adapter, path, template, family = None, str(merged.path), merged.template, merged.family
    else:
        adapter = resolve(args.adapter, args.checkpoint, args.base_model, args.prompt_format, prog="finlora infer")
        path, template, family = adapter.base_path, adapter.template, adapter.family.name
    one = args.one_line if args.one_line is not None else one_line_for(family)
    return InferPlan(model_path=path, adapter=adapter, merged=merged, use_base=args.base, template=template,
                     one_line=one, max_new_tokens=args.max_new_tokens, quant=args.quant, mode=modes[0],
                     text=args.text, rows=rows, out=out), args.batch_size


# ---------------------------------------------------------------- do


def load(p: InferPlan):
    """(model, tokenizer): the base with the adapter attached (weights checked), or the base / merged model."""
    from eval.engine import AdapterHost, load_base

    loaded = load_base(p.model_path, p.quant)
    if p.adapter is None or p.use_base:
        return loaded.model, loaded.tokenizer
    host = AdapterHost(loaded)
    host.attach("adapter", str(p.adapter.weights_dir))
    return host.peft_model, loaded.tokenizer


def ask(model, tokenizer, p: InferPlan, contexts: list[str], batch_size: int, streamer=None) -> list[str]:
    from eval.generation import generate

    prompts = [apply(p.template, c) for c in contexts]
    outputs, _ = generate(model, tokenizer, prompts, p.max_new_tokens, p.one_line, batch_size, streamer=streamer)
    # The one-line rule stops on the newline token, which is not part of the answer.
    return [o.rstrip("\n") for o in outputs] if p.one_line else outputs


def _ask_streamed(model, tokenizer, p: InferPlan, question: str, streamer, error: list) -> None:
    """generate() in the worker thread; an exception is handed to the main thread, which re-raises it."""
    try:
        ask(model, tokenizer, p, [question], 1, streamer=streamer)
    except BaseException as exc:  # noqa: BLE001 - re-raised by chat()
        error.append(exc)
        streamer.end()


def chat(model, tokenizer, p: InferPlan, stdin=None, stdout=None) -> None:
    """One question per line; the answer streams as it is generated (generate runs in a thread)."""
    from transformers import TextIteratorStreamer

    from eval.generation import decode_kwargs

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    who = "base" if p.use_base else "adapter"
    print(f"[{who}; prompt {p.template!r}; empty line or Ctrl-D ends]", file=sys.stderr)
    while True:
        if stdin.isatty():
            print("> ", end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line or not line.strip():
            return
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        **decode_kwargs(tokenizer))
        error: list[BaseException] = []
        worker = threading.Thread(target=_ask_streamed, args=(model, tokenizer, p, line.strip(), streamer, error),
                                  daemon=True)
        worker.start()
        for piece in streamer:
            # The one-line rule stops after the newline token; the newline itself is not part of the answer.
            stdout.write(piece.rstrip("\n") if p.one_line else piece)
            stdout.flush()
        worker.join()
        stdout.write("\n")
        stdout.flush()
        if error:
            raise error[0]


def execute(p: InferPlan, batch_size: int) -> int:
    model, tokenizer = load(p)
    if p.mode == "text":
        print(ask(model, tokenizer, p, [p.text], 1)[0].strip())
    elif p.mode == "file":
        contexts = [r.get("context", r.get("text")) for r in p.rows]
        outputs = ask(model, tokenizer, p, contexts, batch_size)
        lines = [json.dumps({**r, "output": o}, ensure_ascii=False) for r, o in zip(p.rows, outputs, strict=True)]
        write_atomic(p.out, "\n".join(lines) + "\n")
        print(f"{len(lines)} answers -> {p.out}", file=sys.stderr)
    else:
        chat(model, tokenizer, p)
    return 0
