"""Show what you trained: the base and each chosen adapter answer the same text side by side, in a browser.

    finlora demo                                   # http://127.0.0.1:7860, adapters from lora_adapters/
    finlora demo --adapters /tmp/adapters --port 7861
    finlora demo --port 0                          # any free port (the URL is printed)

One base model is loaded (eval/engine.py load_base, as eval and lora.use.infer load it) and every adapter in
--adapters whose base it is gets attached to it once (peft load_adapter, every weight checked); a question
switches between them (set_adapter) and asks the base with all of them disabled (disable_adapter). Each
adapter is asked with the prompt its run.json says training used, and the base with that same prompt (one
base column per prompt format among the chosen adapters), generated greedily exactly as lora.use.infer and
eval generate (lora/use/infer.py ask). Stop rule: a task preset's own (one-line answers for classification and
numeric tasks, as eval scores them), else each adapter's family rule (lora.use.infer's one-line rule).
Presets are the first rows of each eval task whose test file is here (eval/tasks.json); the adapters' own
tasks come first. Beside the answers: each adapter's run facts (run.json: status, base, prompt, LoRA
settings, steps, loss, training wall time and peak RSS) and its loss curve (loss.png, else drawn from the
newest checkpoint's trainer state).

Bad input is one line and exit 2: a port in use (named; --port 0 picks a free one), an --adapters folder
without usable adapters, a base that is not on this machine. Only --host 127.0.0.1 is served by default;
another host exposes the demo (and the models) to the network.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

from eval.adapter_tasks import FAMILY_TASKS
from eval.discovery import Adapter, discover, group_by_base
from lora.core.compute import human_bytes, human_seconds
from lora.core.errors import UserError
from lora.core.files import repo_relative
from lora.train.outputs import latest_trainer_state, loss_series
from lora.use.infer import InferPlan, ask, one_line_for
from lora.use.merge import quiet

DEFAULT_PORT = 7860
DEFAULT_MAX_NEW_TOKENS = 64
PRESET_ROWS = 20  # example rows offered per task


@dataclass(frozen=True)
class DemoAdapter:
    name: str
    path: Path
    prompt_format: str
    template: str
    family: str | None
    one_line: bool  # lora.use.infer's rule for its family
    run: dict | None  # run.json as read
    config: dict  # adapter_config.json


@dataclass(frozen=True)
class DemoPlan:
    host: str
    port: int
    base_ref: str
    base_path: str
    adapters: tuple[DemoAdapter, ...]
    skipped: tuple[str, ...]  # adapters found but not offered, each with why
    max_new_tokens: int
    preset_rows: int


@dataclass(frozen=True)
class Answer:
    label: str  # column header: "base", "base [chatml]", or the adapter's name
    prompt_format: str
    text: str
    seconds: float


# ---------------------------------------------------------------- decide (no model)


def free_port(host: str, port: int) -> int:
    """The port to serve on: `port` when nothing listens there, a free one for 0; else UserError naming it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        if os.name == "posix":  # as the server binds: a port left in TIME_WAIT is free, one listened on is not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except PermissionError:
            raise UserError(f"--port {port}: not allowed on {host} (ports below 1024 need privileges)") from None
        except OSError as exc:
            if port and exc.errno in (98, 48, 10048):  # EADDRINUSE: Linux, macOS, Windows
                raise UserError(f"port {port} on {host} is in use; pass --port N for another "
                                "(--port 0 picks a free one)") from None
            raise UserError(f"--host {host} --port {port}: cannot serve there ({exc.strerror or exc})") from None
        return s.getsockname()[1]


def demo_adapter(a: Adapter) -> DemoAdapter:
    family = a.family.name if a.family else None
    return DemoAdapter(name=a.name, path=a.path, prompt_format=a.prompt_format or "run.json", template=a.template,
                       family=family, one_line=one_line_for(family), run=a.run, config=a.config)


def choose_adapters(found: list[Adapter], base_model: str | None) -> tuple[str, str, list[Adapter], list[str]]:
    """(base ref, base folder, adapters on it, skipped with why): one base is loaded, the one most usable
    adapters share (the first such on a tie), or --base-model."""
    skipped: list[str] = []
    usable = []
    for a in found:
        if a.error:
            skipped.append(f"{a.name}: {a.error}")
        elif a.template is None:
            skipped.append(f"{a.name}: no run.json, so its training prompt is unknown")
        else:
            usable.append(a)
    groups = [g for g in group_by_base(usable, override=base_model) if g.adapters]
    loadable = [g for g in groups if g.base.path is not None]
    if not loadable:
        why = groups[0].base.error if groups else "; ".join(skipped) or "none found"
        raise UserError(f"no adapter to show: {why}")
    chosen = max(loadable, key=lambda g: len(g.adapters))  # max keeps the first of equals
    for g in groups:
        if g is not chosen:
            skipped += [f"{a.name}: base {g.base.ref} (one base per demo; --adapters a folder of its own)"
                        for a in g.adapters]
    return chosen.base.ref, chosen.base.path, chosen.adapters, skipped


def plan(args: Namespace) -> DemoPlan:
    if args.max_new_tokens < 1 or args.preset_rows < 1:
        raise UserError("--max-new-tokens and --preset-rows must be positive integers")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be 0..65535")
    port = free_port(args.host, args.port)  # before anything slow: a port in use is known at once
    found = discover([args.adapters])
    base_ref, base_path, adapters, skipped = choose_adapters(found, args.base_model)
    return DemoPlan(host=args.host, port=port, base_ref=base_ref, base_path=base_path,
                    adapters=tuple(demo_adapter(a) for a in adapters), skipped=tuple(skipped),
                    max_new_tokens=args.max_new_tokens, preset_rows=args.preset_rows)


# ---------------------------------------------------------------- what the page shows (pure)


def compare(chosen: list[DemoAdapter], text: str, stop_at_newline: bool | None, max_new_tokens: int,
            answer) -> list[Answer]:
    """The base (once per prompt format among the chosen adapters), then each adapter, on the same text.
    answer(adapter name or None, template, one_line, max_new_tokens, text) -> str. stop_at_newline: the
    preset task's rule, or None (each adapter's own; the base's is one-line when all its adapters' are)."""
    if not chosen:
        raise UserError("choose at least one adapter")
    if not text.strip():
        raise UserError("type a text or pick an example row")
    formats: dict[str, tuple[str, list[DemoAdapter]]] = {}
    for a in chosen:
        formats.setdefault(a.prompt_format, (a.template, []))[1].append(a)

    def timed(label: str, fmt: str, name: str | None, template: str, one_line: bool) -> Answer:
        t0 = time.monotonic()
        out = answer(name, template, one_line, max_new_tokens, text)
        return Answer(label, fmt, out.strip(), round(time.monotonic() - t0, 2))

    answers = []
    for fmt, (template, users) in formats.items():
        one = stop_at_newline if stop_at_newline is not None else all(a.one_line for a in users)
        answers.append(timed("base" if len(formats) == 1 else f"base [{fmt}]", fmt, None, template, one))
    for a in chosen:
        one = stop_at_newline if stop_at_newline is not None else a.one_line
        answers.append(timed(a.name, a.prompt_format, a.name, a.template, one))
    return answers


def answer_table(answers: list[Answer]) -> dict:
    """One column per model: its answer, the prompt format it was asked with, seconds."""
    return {"headers": ["", *(a.label for a in answers)],
            "data": [["answer", *(a.text for a in answers)],
                     ["prompt", *(a.prompt_format for a in answers)],
                     ["seconds", *(f"{a.seconds:.2f}" for a in answers)]]}


def run_facts(a: DemoAdapter) -> list[tuple[str, str]]:
    """What run.json and adapter_config.json say, as (fact, value) rows."""
    run, cfg = a.run or {}, a.config
    entry = run.get("entry") or {}
    rows = [("folder", repo_relative(a.path)), ("status", run.get("status", "–")),
            ("base model", str(run.get("base_model") or cfg.get("base_model_name_or_path") or "–")),
            ("prompt format", a.prompt_format), ("task family", a.family or "unknown"),
            ("LoRA", f"{cfg.get('peft_type', '?')} r={cfg.get('r', '?')} alpha={cfg.get('lora_alpha', '?')} "
                     f"on {cfg.get('target_modules', '?')}"
                     + (" (DoRA)" if cfg.get("use_dora") else "") + (" (rsLoRA)" if cfg.get("use_rslora") else ""))]
    for key in ("dataset_path", "learning_rate", "max_steps", "quant_bits"):
        if entry.get(key) is not None:
            rows.append((key.replace("_", " "), str(entry[key])))
    for key, label in (("global_step", "steps done"), ("final_train_loss", "final train loss"),
                       ("started_at", "started"), ("ended_at", "ended")):
        if run.get(key) is not None:
            v = run[key]
            rows.append((label, f"{v:.4f}" if isinstance(v, float) else str(v)))
    compute = run.get("compute")
    if compute:
        train = next((p for p in compute.get("phases", []) if p.get("name") == "train"), compute.get("total", {}))
        rows.append(("training wall time", human_seconds(train.get("wall_seconds"))))
        rows.append(("peak RSS (training processes)", human_bytes(train.get("peak_rss_bytes"))))
        if train.get("cpu_percent") is not None:
            rows.append(("mean CPU", f"{train['cpu_percent']:.0f}% of {compute.get('cpu_count')} cores"))
        if train.get("peak_gpu_memory_bytes") is not None:
            rows.append(("peak GPU memory", human_bytes(train["peak_gpu_memory_bytes"])))
    return rows


def facts_markdown(a: DemoAdapter) -> str:
    from eval.report import md_escape

    return "| run fact | value |\n|---|---|\n" + "\n".join(f"| {md_escape(k)} | {md_escape(v)} |" for k, v in run_facts(a))


def loss_points(adapter_dir: Path) -> list[dict] | None:
    """Train/eval loss by step from the newest checkpoint's trainer state (when training wrote no loss.png)."""
    state = latest_trainer_state(adapter_dir)
    if state is None:
        return None
    points = [{"step": s, "loss": v, "series": f"{name} loss"}
              for name, series in loss_series(state).items() for s, v in series]
    return points or None


def preset_tasks(adapters: tuple[DemoAdapter, ...]) -> dict:
    """name -> eval Task for every task whose test file is here; the adapters' own tasks first."""
    from eval.tasks import has_data, load_registry

    registry = {n: t for n, t in load_registry().items() if has_data(t)}
    own = [t for a in adapters for t in FAMILY_TASKS.get(a.family or "", ()) if t in registry]
    order = list(dict.fromkeys(own + list(registry)))
    return {n: registry[n] for n in order}


def row_labels(rows: list[dict], width: int = 90) -> list[str]:
    """'#id [target] text' per row, without the words every row shares at its start and end (the task's
    instruction and answer cue), so the rows can be told apart in a dropdown."""
    words = [r["context"].split() for r in rows]
    lead = trail = 0
    if len(words) > 1:
        shortest = min(len(w) for w in words)
        while lead < shortest - 1 and all(w[lead] == words[0][lead] for w in words):
            lead += 1
        while trail < shortest - lead - 1 and all(w[-1 - trail] == words[0][-1 - trail] for w in words):
            trail += 1
    labels = []
    for r, w in zip(rows, words, strict=True):
        text = " ".join(w[lead:len(w) - trail])
        labels.append(f"#{r['id']} [{r['target']}] {text[:width]}{'…' if len(text) > width else ''}")
    return labels


# ---------------------------------------------------------------- do: the model and the page


class Models:
    """One base with every adapter attached once; a question switches between them (one at a time)."""

    def __init__(self, p: DemoPlan):
        from eval.engine import AdapterHost, load_base

        self.loaded = load_base(p.base_path)
        self.host = AdapterHost(self.loaded)
        for a in p.adapters:
            self.host.attach(a.name, str(a.path))  # every weight must land (eval's check)
        self._lock = threading.Lock()  # Gradio answers requests in threads; the model has one active adapter

    def answer(self, name: str | None, template: str, one_line: bool, max_new_tokens: int, text: str) -> str:
        p = InferPlan(model_path="", adapter=None, merged=None, use_base=name is None, template=template,
                      one_line=one_line, max_new_tokens=max_new_tokens, quant=None, mode="text", text=text)
        with self._lock:
            if name is not None:
                self.host.peft_model.set_adapter(name)
            model, ctx = self.host.model_for(name)
            with ctx:
                return ask(model, self.loaded.tokenizer, p, [text], 1)[0]


def adapter_panel(a: DemoAdapter) -> None:
    """Run facts beside the loss curve: training's loss.png, else drawn from the trainer state."""
    import gradio as gr
    import pandas as pd

    gr.Markdown(facts_markdown(a))
    png = a.path / "loss.png"
    points = None if png.is_file() else loss_points(a.path)
    if png.is_file():
        gr.Image(str(png), label="loss (loss.png from training)", interactive=False)
    elif points:
        gr.LinePlot(pd.DataFrame(points), x="step", y="loss", color="series", label="loss (from the trainer state)")
    else:
        gr.Markdown("No loss curve: no loss.png and no checkpoint with a trainer state.")


def build_app(p: DemoPlan, models: Models):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home (before gradio is imported)
    import gradio as gr
    import pandas as pd

    by_name = {a.name: a for a in p.adapters}
    tasks = preset_tasks(p.adapters)
    rows_cache: dict[str, list[dict]] = {}

    def rows_of(task: str) -> list[dict]:
        if task not in rows_cache:
            from eval.tasks import load_task_data

            rows_cache[task] = load_task_data(tasks[task]).rows[: p.preset_rows]
        return rows_cache[task]

    def pick_task(task: str | None):
        if not task:
            return gr.update(choices=[], value=None), gr.update(value=p.max_new_tokens)
        rows = rows_of(task)
        choices = [(label, str(r["id"])) for label, r in zip(row_labels(rows), rows, strict=True)]
        return gr.update(choices=choices, value=None), gr.update(value=tasks[task].max_new_tokens)

    def pick_row(task: str | None, row_id: str | None):
        if not task or row_id is None:
            return gr.update(), ""
        row = next(r for r in rows_of(task) if str(r["id"]) == str(row_id))
        return row["context"], str(row["target"])

    def ask(chosen: list[str], task: str | None, text: str, max_new_tokens: float):
        try:
            unknown = [c for c in chosen or [] if c not in by_name]
            if unknown:
                raise UserError(f"unknown adapter {unknown[0]!r}")
            stop = tasks[task].kind.stop_at_newline if task in tasks else None
            answers = compare([by_name[c] for c in chosen or []], text or "", stop, int(max_new_tokens),
                              models.answer)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        table = answer_table(answers)
        return pd.DataFrame(table["data"], columns=table["headers"])

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts: works offline
                              font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="finlora-axolotl: base vs adapters", analytics_enabled=False) as app:
        gr.Markdown(f"## Base vs adapters\nBase **{p.base_ref}** loaded once; each adapter is asked with its "
                    "training prompt, the base with the same prompt (greedy).")
        with gr.Row():
            with gr.Column(scale=1):
                chosen = gr.CheckboxGroup([a.name for a in p.adapters], value=[a.name for a in p.adapters],
                                          label="adapters", elem_id="adapters")
                task = gr.Dropdown(list(tasks), value=None, label="task preset (eval/tasks.json)", elem_id="task")
                row = gr.Dropdown([], value=None, label="example row (first rows of the test file)", elem_id="row")
                budget = gr.Slider(1, 512, value=p.max_new_tokens, step=1, label="max new tokens", elem_id="budget")
            with gr.Column(scale=2):
                text = gr.Textbox(lines=5, label="text (the row's context)", elem_id="text")
                expected = gr.Textbox(label="expected answer (the row's target)", interactive=False, elem_id="expected")
                go = gr.Button("Ask base and adapters", variant="primary", elem_id="ask")
        table = gr.Dataframe(label="answers, side by side", wrap=True, interactive=False, elem_id="answers")
        if p.skipped:
            gr.Markdown("Not offered: " + "; ".join(p.skipped))
        gr.Markdown("### The adapters: run facts and loss curves")
        with gr.Tabs():
            for a in p.adapters:
                with gr.Tab(a.name), gr.Row():
                    adapter_panel(a)
        task.change(pick_task, [task], [row, budget], api_name="pick_task")
        row.change(pick_row, [task, row], [text, expected], api_name="pick_row")
        go.click(ask, [chosen, task, text, budget], [table], api_name="ask")
        text.submit(ask, [chosen, task, text, budget], [table], api_visibility="private")
    return app, theme


def serve(p: DemoPlan) -> int:
    quiet()
    print(f"loading {p.base_ref} and {len(p.adapters)} adapter(s)…", file=sys.stderr, flush=True)
    models = Models(p)
    app, theme = build_app(p, models)
    print(f"demo: http://{p.host}:{p.port}/ (Ctrl-C stops it)", file=sys.stderr, flush=True)
    app.queue(default_concurrency_limit=1).launch(server_name=p.host, server_port=p.port, theme=theme,
                                                  ssr_mode=False, quiet=True, show_error=True)
    return 0
