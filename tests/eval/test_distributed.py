"""eval/shards.py and eval/distributed.py without processes (fast): token-balanced shards made of the
one-process batches, merging in row order, the runner's rank logic with ranks as threads, and the CLI's
--processes checks. The real multi-process runs (torchrun, gloo) are in tests/eval/test_distributed_processes.py.

    .venv/bin/python -m pytest tests/eval/test_distributed.py -q
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

import eval.engine as engine
import eval.generation as generation
from eval import shards
from eval.discovery import discover, group_by_base
from eval.distributed import failure_line, threads_per_rank
from eval.fixtures import BUNDLED_REF, run_record
from eval.fixtures import make_fake_adapter as fake_adapter
from eval.request import decide_processes
from eval.run_plan import Settings
from eval.runner import run
from eval.shards import ShardResult
from eval.tasks import load_registry, load_task_data
from eval.world import Solo
from lora.cli.shims import eval_main as main
from lora.core.errors import UserError
from tests.eval.test_cli import err_line

# ---------------------------------------------------------------- sharding (pure)


def _plan(lengths, batch_size, ranks, max_new=10):
    batches = generation.batches_by_length(lengths, batch_size)
    costs = [shards.batch_cost(lengths, b, max_new) for b in batches]
    return batches, costs, shards.assign(batches, costs, ranks)


def test_shards_are_whole_batches_of_the_one_process_plan_and_rebatch_identically():
    # The property byte-identical outputs rest on: a rank's rows, batched the way generation.generate batches
    # them, are exactly the one-process batches it was given (same rows, same padding width).
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(0, 40)
        lengths = [rng.choice([rng.randint(5, 40), 20]) for _ in range(n)]  # many ties on purpose
        batch_size, ranks = rng.randint(1, 6), rng.randint(1, 5)
        batches, _, assigned = _plan(lengths, batch_size, ranks)
        assert sorted(i for rows in assigned for i in rows) == list(range(n))  # every row, once
        for rows in assigned:
            assert rows == sorted(rows)
            local = generation.batches_by_length([lengths[i] for i in rows], batch_size)
            assert sorted([rows[j] for j in b] for b in local) == sorted(b for b in batches if b[0] in set(rows))


def test_shards_balance_tokens_not_rows():
    # 4 prompts 5x longer than the other 20 (FinLoRA's tasks differ ~5x). Half the rows each would give
    # rank 0 the long batch and 8 more rows: 2920 tokens against 1320. By tokens: the long batch
    # alone against the 20 short rows, 2040 against 2200.
    lengths = [500] * 4 + [100] * 20
    batches, costs, assigned = _plan(lengths, batch_size=4, ranks=2)
    tokens = [shards.shard_tokens(lengths, batches, rows, 10) for rows in assigned]
    assert [len(r) for r in assigned] == [4, 20]
    assert tokens == [2040, 2200] and sum(tokens) == sum(costs)
    half = [shards.shard_tokens(lengths, batches, list(range(12)), 10),
            shards.shard_tokens(lengths, batches, list(range(12, 24)), 10)]
    assert half == [2920, 1320]


def test_assign_is_deterministic_and_gives_spare_ranks_nothing():
    batches, costs, assigned = _plan([10, 9, 8], batch_size=2, ranks=4)
    assert assigned == shards.assign(batches, costs, 4)
    assert sum(1 for r in assigned if not r) == 2  # two batches, four ranks
    with pytest.raises(ValueError):
        shards.assign(batches, costs, 0)


def test_merge_puts_outputs_back_in_row_order_and_refuses_gaps_and_repeats():
    got = shards.merge(5, [ShardResult(1, [1, 3], ["b", "d"]), ShardResult(0, [0, 2, 4], ["a", "c", "e"])])
    assert got == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match="came back from no rank"):
        shards.merge(3, [ShardResult(0, [0, 2], ["a", "c"])])
    with pytest.raises(ValueError, match="twice"):
        shards.merge(2, [ShardResult(0, [0, 1], ["a", "b"]), ShardResult(1, [1], ["b"])])
    with pytest.raises(ValueError, match="outputs for"):
        shards.merge(2, [ShardResult(0, [0, 1], ["a"])])


def test_first_error_names_the_lowest_failing_rank_and_totals_add_up():
    ok = ShardResult(0, [0], ["a"], seconds=1.0, tokens=7, new_tokens=2)
    assert shards.first_error([ok]) is None
    bad = [ok, ShardResult(2, [], [], error="OutOfMemoryError: CUDA"), ShardResult(1, [], [], error="x")]
    assert shards.first_error(bad) == "rank 1: x"
    totals = shards.rank_totals([[ok, ShardResult(1, [1, 2], ["b", "c"], seconds=2.5, tokens=9)]] * 2, 2)
    assert totals == [{"rank": 0, "pairs": 2, "rows": 2, "tokens": 14, "new_tokens": 4, "generate_seconds": 2.0},
                      {"rank": 1, "pairs": 2, "rows": 4, "tokens": 18, "new_tokens": 0, "generate_seconds": 5.0}]


# ---------------------------------------------------------------- process count, threads, failure lines (pure)


def test_decide_processes_defaults_and_limits():
    assert decide_processes(None, gpus=4, cpus=2, base_quant=None) == 4  # a pod: every GPU
    assert decide_processes(2, gpus=4, cpus=2, base_quant=4) == 2  # 4-bit on GPUs: each rank its own copy
    assert decide_processes(None, gpus=0, cpus=2, base_quant=None) == 1  # CPU: one, unless asked
    assert decide_processes(2, gpus=0, cpus=2, base_quant=None) == 2
    with pytest.raises(UserError, match=r"--processes 5: only 4 CUDA GPU\(s\) found"):
        decide_processes(5, gpus=4, cpus=64, base_quant=None)
    with pytest.raises(UserError, match=r"--processes 3: no CUDA GPU found and only 2 CPU core\(s\)"):
        decide_processes(3, gpus=0, cpus=2, base_quant=None)
    with pytest.raises(UserError, match="--base-quant 8 on CPU"):
        decide_processes(2, gpus=0, cpus=2, base_quant=8)


def test_threads_split_the_cores_unless_the_user_set_them():
    assert threads_per_rank(2, 2, {}) == 1
    assert threads_per_rank(4, 16, {}) == 4
    assert threads_per_rank(3, 2, {}) == 1
    assert threads_per_rank(2, 16, {"OMP_NUM_THREADS": "3"}) is None


def test_failure_line_is_one_line_with_the_ranks_message_or_its_signal():
    failure = SimpleNamespace(message="RankLost: gathering; peer closed\nmore", exitcode=1,
                              signal_name=lambda: "")
    assert failure_line(1, 2, failure) == "rank 1 of 2 failed: RankLost: gathering; peer closed; more"
    killed = SimpleNamespace(message="Signal 9 (SIGKILL) received by PID 7", exitcode=-9, signal_name=lambda: "SIGKILL")
    assert failure_line(0, 4, killed) == "rank 0 of 4 failed: killed by signal 9 (SIGKILL)"
    assert failure_line(3, 4, SimpleNamespace(message={"message": "ValueError: x"}, exitcode=1,
                                              signal_name=lambda: "")) == "rank 3 of 4 failed: ValueError: x"


# ---------------------------------------------------------------- CLI checks (no model)


@pytest.fixture
def no_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("evaluation started")

    monkeypatch.setattr("lora.cli.verbs.eval.run_pairs", refuse)
    monkeypatch.setattr("eval.request.launch", refuse)


@pytest.mark.parametrize(("argv", "gpus", "needle"), [
    (["--processes", "0"], 0, "--processes 0: must be 1 or more"),
    (["--processes", "-2"], 0, "--processes -2: must be 1 or more"),
    (["--processes", "3"], 0, "--processes 3: no CUDA GPU found and only 2 CPU core(s) available here"),
    (["--processes", "9"], 8, "--processes 9: only 8 CUDA GPU(s) found on this machine"),
    (["--processes", "2", "--base-quant", "4"], 0, "--processes 2 with --base-quant 4 on CPU"),
    (["--rank-timeout", "0", "--processes", "2"], 0, "--rank-timeout 0: must be a positive number"),
    (["--rank-timeout", "60"], 0, "--rank-timeout applies to several processes"),
])
def test_bad_processes_exit_2_with_one_line_before_anything(tmp_path, capsys, monkeypatch, no_run, argv, gpus, needle):
    monkeypatch.setattr("lora.cli.verbs.eval.detect_cuda_gpus", lambda: gpus)
    monkeypatch.setattr("lora.cli.verbs.eval.usable_cpus", lambda: 2)
    fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    out = tmp_path / "out"
    code = main([str(tmp_path / "ad"), "--tasks", "fpb", "--limit", "2", "--out", str(out), *argv])
    assert code == 2
    assert needle in err_line(capsys)
    assert not out.exists()


# ---------------------------------------------------------------- the runner with ranks as threads (fast)


class ThreadWorld(Solo):
    """Solo's interface for `size` threads of one test: each collective is a barrier-guarded swap."""

    def __init__(self, rank: int, hub):
        super().__init__(rank=rank, size=hub.size)
        self.hub = hub

    def _exchange(self, obj):
        self.hub.slots[self.rank] = obj
        self.hub.barrier.wait(timeout=30)
        out = list(self.hub.slots)
        self.hub.barrier.wait(timeout=30)
        return out

    def gather(self, obj):
        out = self._exchange(obj)
        return out if self.rank == 0 else None

    def all_gather(self, obj):
        return self._exchange(obj)

    def broadcast(self, obj):
        return self._exchange(obj)[0]


class FakeTokenizer:
    def __call__(self, text):
        return {"input_ids": list(range(len(text) // 20 + 1))}


class FakeHost:
    """AdapterHost's interface. A rank listed in `fail_attach` cannot attach an adapter."""
    fail_attach: set = set()

    def __init__(self, loaded, merge="off"):
        self.loaded = loaded
        self.name = None
        self.merge_choices: dict = {}

    def attach(self, name, path):
        if threading.current_thread().name in self.fail_attach:
            raise RuntimeError(f"out of memory on {threading.current_thread().name}")
        self.name = name

    def detach(self, name):
        self.name = None

    def model_for(self, adapter):
        return SimpleNamespace(name=adapter, config=SimpleNamespace(max_position_embeddings=4096)), contextlib.nullcontext()


@pytest.fixture
def fake_engine(monkeypatch):
    """Outputs that depend on the model and the prompt, so a row merged into the wrong place shows."""
    calls: list = []

    def generate(model, tokenizer, prompts, max_new_tokens, stop_at_newline, batch_size, progress=None,
                 prefix_cache=None):
        calls.append((threading.current_thread().name, model.name, len(prompts)))
        outs = [("negative" if int(hashlib.sha256(f"{model.name}{p}".encode()).hexdigest(), 16) % 2 else "neutral")
                + f"\n{len(p)}" for p in prompts]
        return outs, generation.GenStats(0.25, 3 * len(prompts), 0)

    loaded = SimpleNamespace(tokenizer=FakeTokenizer(), load_seconds=0.1, dtype="float32")
    monkeypatch.setattr(engine, "load_base", lambda path, quant=None, dtype=None: loaded)
    monkeypatch.setattr(engine, "AdapterHost", FakeHost)
    monkeypatch.setattr(generation, "generate", generate)
    monkeypatch.setattr(engine, "disable_progress_bars", lambda: None)
    monkeypatch.setattr(FakeHost, "fail_attach", set())
    return calls


def _plan_run(tmp_path: Path, out: Path):
    fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    fake_adapter(tmp_path / "ad" / "b", run=run_record("b", prompt_format="finlora_inst"))
    groups = group_by_base(discover([tmp_path / "ad"]), BUNDLED_REF)
    registry = load_registry()
    datas = {t: load_task_data(registry[t]).head(13) for t in ("fpb", "formula")}
    return groups, datas, Settings(out=out, batch_size=3, progress=False)


def run_threads(groups, datas, settings, size: int):
    """runner.run in `size` threads; rank 0's (results, errors)."""
    hub = SimpleNamespace(size=size, slots=[None] * size, barrier=threading.Barrier(size))
    got: dict = {}

    def rank(r):
        world = ThreadWorld(r, hub)
        try:
            got[r] = run(groups, datas, replace(settings), world)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            got[r] = exc
            hub.barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,), name=f"rank{r}") for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r in range(size):
        if isinstance(got.get(r), BaseException):
            raise got[r]
    assert all(got[r] == (None, 0) for r in range(1, size))  # only rank 0 holds results
    return got[0]


# What may differ between two runs of the same plan (and between 1 and N processes): clocks, measured
# compute (memory, utilisation) and the command.
VARYING = frozenset({"timing", "timings", "compute", "finished_at", "created", "load_seconds", "command"})


def without_timing(obj):
    """obj (parsed results.json or pair file) without the VARYING keys, at any depth."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in VARYING}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def test_three_thread_ranks_write_what_one_process_writes(tmp_path, fake_engine):
    groups, datas, settings = _plan_run(tmp_path, tmp_path / "one")
    one, errors = run(groups, datas, settings)
    assert errors == 0
    many, errors = run_threads(groups, datas, replace(settings, out=tmp_path / "many"), 3)
    assert errors == 0
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.json*"))
    assert len(files) == 16  # 4 rows (base [chatml], base [finlora_inst], a, b) x 2 tasks: pair + predictions
    for f in files:
        a, b = (tmp_path / "one" / f).read_text(), (tmp_path / "many" / f).read_text()
        if f.parts[0] == "predictions":
            assert a == b
        else:
            assert without_timing(json.loads(a)) == without_timing(json.loads(b))
    assert without_timing(one) == without_timing(many)
    assert one["timings"]["processes"] == 1 and "ranks" not in one["timings"]
    ranks = many["timings"]["ranks"]
    assert [t["rank"] for t in ranks] == [0, 1, 2] and sum(t["rows"] for t in ranks) == 8 * 13
    assert all(t["pairs"] == 8 for t in ranks)
    pair = json.loads((tmp_path / "many" / "pairs" / "a" / "fpb.json").read_text())
    assert sum(r["rows"] for r in pair["timing"]["ranks"]) == 13
    threads_used = {name for name, _, _ in fake_engine}
    assert threads_used >= {"rank0", "rank1", "rank2"}


def test_thread_ranks_resume_from_a_one_process_run(tmp_path, fake_engine):
    groups, datas, settings = _plan_run(tmp_path, tmp_path / "out")
    run(groups, datas, settings)
    (tmp_path / "out" / "pairs" / "b" / "formula.json").unlink()  # as if killed during it
    fake_engine.clear()
    many, errors = run_threads(groups, datas, settings, 2)
    assert errors == 0
    assert {(model, n) for _, model, n in fake_engine} <= {("b", n) for n in range(14)}  # only b x formula redone
    assert sum(n for _, _, n in fake_engine) == 13
    assert "metrics" in many["rows"][-1]["results"]["formula"]


def test_one_rank_failing_its_shard_is_one_error_cell_naming_the_rank(tmp_path, fake_engine, monkeypatch, capsys):
    real = generation.generate

    def flaky(model, tokenizer, prompts, max_new_tokens, *args, **kwargs):
        if threading.current_thread().name == "rank1" and model.name == "a" and max_new_tokens == 50:
            raise ValueError("out of memory\nsecond line")
        return real(model, tokenizer, prompts, max_new_tokens, *args, **kwargs)

    monkeypatch.setattr(generation, "generate", flaky)
    groups, datas, settings = _plan_run(tmp_path, tmp_path / "out")
    results, errors = run_threads(groups, datas, settings, 2)
    assert errors == 1
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["a"]["results"]["formula"] == {
        "error": "evaluation failed: RuntimeError: rank 1: ValueError: out of memory; second line"}
    assert "metrics" in rows["a"]["results"]["fpb"] and "metrics" in rows["b"]["results"]["formula"]
    assert not (tmp_path / "out" / "pairs" / "a" / "formula.json").exists()
    assert not (tmp_path / "out" / "predictions" / "a" / "formula.jsonl").exists()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == ["error: a × formula: evaluation failed: RuntimeError: rank 1: ValueError: out of memory; "
                   "second line"]  # once, by rank 0


def test_an_adapter_one_rank_cannot_attach_is_an_error_row_on_every_rank(tmp_path, fake_engine, monkeypatch):
    monkeypatch.setattr(FakeHost, "fail_attach", {"rank1"})
    groups, datas, settings = _plan_run(tmp_path, tmp_path / "out")
    results, errors = run_threads(groups, datas, settings, 2)
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["a"]["error"] == "adapter failed to load: RuntimeError: out of memory on rank1 (rank 1)"
    assert rows["b"]["error"] == rows["a"]["error"]
    assert errors == 2
    assert {model for _, model, _ in fake_engine} == {None}  # the base rows only: no rank generated for a or b
