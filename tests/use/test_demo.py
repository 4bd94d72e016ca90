"""lora/use/demo.py: the Gradio demo — decisions without a model (fast), a real server driven through gradio_client
(slow), and a real headless Chromium that saves the screenshot docs/demo.md shows (browser: make demo-screenshot).

    .venv/bin/python -m pytest -q tests/use/test_demo.py -m "not slow"
    .venv/bin/python -m pytest -q tests/use/test_demo.py -m slow
    make demo-screenshot        # = DEMO_SCREENSHOT=docs/demo-app.png pytest -m browser tests/use/test_demo.py
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from eval.fixtures import make_fake_adapter, run_record
from lora.use import demo
from lora.use.demo import Answer, DemoAdapter, answer_table, compare, row_labels
from tests.conftest import REPO
from tests.verb_support import verb_main, verb_plan

TEXT = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007."


def adapter(name: str, fmt: str = "chatml", one_line: bool = True, **run) -> DemoAdapter:
    return DemoAdapter(name=name, path=REPO / "lora_adapters" / name, prompt_format=fmt,
                       template=f"<{fmt}>{{context}}", family="sentiment", one_line=one_line,
                       run=run_record(name, **run).to_json(), config={"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                                       "target_modules": ["q_proj", "v_proj"]})


# ---------------------------------------------------------------- fast: no model


def test_compare_asks_the_base_once_per_prompt_format_then_each_adapter():
    asked = []

    def answer(name, template, one_line, budget, text):
        asked.append((name, template, one_line, budget))
        return f" {name or 'base'} says\n"

    a, b, c = adapter("a"), adapter("b", fmt="alpaca", one_line=False), adapter("c")
    answers = compare([a, b, c], TEXT, None, 12, answer)
    assert [x.label for x in answers] == ["base [chatml]", "base [alpaca]", "a", "b", "c"]
    assert asked[:2] == [(None, "<chatml>{context}", True, 12), (None, "<alpaca>{context}", False, 12)]
    assert asked[3] == ("b", "<alpaca>{context}", False, 12)  # its own format and its family's stop rule
    assert answers[2].text == "a says" and answers[2].prompt_format == "chatml"
    asked.clear()
    compare([b], TEXT, True, 5, answer)  # a preset task's rule wins over the family's
    assert asked == [(None, "<alpaca>{context}", True, 5), ("b", "<alpaca>{context}", True, 5)]
    assert [x.label for x in compare([a], TEXT, None, 5, answer)] == ["base", "a"]


@pytest.mark.parametrize("chosen, text, message", [([], TEXT, "choose at least one adapter"),
                                                    (["a"], "  ", "type a text")])
def test_compare_refuses_nothing_to_ask(chosen, text, message):
    with pytest.raises(demo.UserError, match=message):
        compare([adapter(n) for n in chosen], text, None, 5, lambda *a: "x")


def test_answer_table_puts_models_side_by_side():
    t = answer_table([Answer("base", "chatml", "The sentiment is positive.", 1.234), Answer("a", "chatml", "positive", 0.5)])
    assert t["headers"] == ["", "base", "a"]
    assert t["data"] == [["answer", "The sentiment is positive.", "positive"], ["prompt", "chatml", "chatml"],
                         ["seconds", "1.23", "0.50"]]


def test_run_facts_show_run_json_and_compute():
    from lora.core.compute import ComputeRecord, PhaseCompute

    train = PhaseCompute(name="train", wall_seconds=381, peak_rss_bytes=2_100_000_000, cpu_percent=93.4)
    compute = ComputeRecord(interval_seconds=1, cpu_count=2, total=train, phases=[train]).model_dump()
    facts = dict(demo.run_facts(adapter("a", global_step=100, final_train_loss=0.157, compute=compute,
                                        entry={"learning_rate": 0.001, "max_steps": 100})))
    assert facts["status"] == "complete" and facts["steps done"] == "100" and facts["final train loss"] == "0.1570"
    assert facts["LoRA"] == "LORA r=8 alpha=16 on ['q_proj', 'v_proj']" and facts["learning rate"] == "0.001"
    assert facts["training wall time"] == "6m21s" and facts["peak RSS (training processes)"] == "2.1 GB"
    assert facts["mean CPU"] == "93% of 2 cores"
    assert "training wall time" not in dict(demo.run_facts(adapter("old")))  # run.json from before compute
    assert "| folder | lora_adapters/a\\|b |" in demo.facts_markdown(adapter("a|b"))  # a | stays in its cell


def test_loss_points_come_from_the_newest_checkpoint(tmp_path):
    assert demo.loss_points(tmp_path) is None
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "adapter_model.safetensors").write_bytes(b"w")
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": 2, "loss": 1.5}, {"step": 4, "loss": 0.9}, {"step": 4, "eval_loss": 1.1}]}))
    assert demo.loss_points(tmp_path) == [{"step": 2, "loss": 1.5, "series": "train loss"},
                                          {"step": 4, "loss": 0.9, "series": "train loss"},
                                          {"step": 4, "loss": 1.1, "series": "eval loss"}]


def test_row_labels_drop_the_words_every_row_shares():
    rows = [{"id": 0, "target": "neutral", "context": "Instruction: say it. Input: Sales grew. Answer:"},
            {"id": 7, "target": "negative", "context": "Instruction: say it. Input: Costs rose sharply. Answer:"}]
    assert row_labels(rows) == ["#0 [neutral] Sales grew.", "#7 [negative] Costs rose sharply."]
    assert row_labels(rows[:1]) == ["#0 [neutral] Instruction: say it. Input: Sales grew. Answer:"]


def test_preset_tasks_put_the_adapters_own_tasks_first():
    names = list(demo.preset_tasks((adapter("a"),)))
    assert names[:4] == ["fpb", "fiqa", "tfns", "nwgi"] and "formula" in names


def run_main(argv, capsys) -> tuple[int, str]:
    code = verb_main("demo", argv)
    return code, capsys.readouterr().err


def test_port_in_use_is_exit_2_naming_the_port(tmp_path, capsys):
    make_fake_adapter(tmp_path / "a", run=run_record("a"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, err = run_main(["--adapters", str(tmp_path), "--port", str(port)], capsys)
    assert code == 2 and err == f"error: port {port} on 127.0.0.1 is in use; pass --port N for another " \
                                "(--port 0 picks a free one)\n"


def test_port_0_picks_a_free_one():
    port = demo.free_port("127.0.0.1", 0)
    assert 0 < port < 65536 and demo.free_port("127.0.0.1", port) == port


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no adapters found"),
    (lambda d: make_fake_adapter(d / "late", run=run_record("late", status="running")),
     "no adapter to show: late: training did not finish (run.json status: running)"),
    (lambda d: make_fake_adapter(d / "far", run=run_record("far", base_model="acme/not-here")),
     "no adapter to show: base model acme/not-here is not available locally"),
])
def test_nothing_to_show_is_one_line_exit_2(tmp_path, capsys, setup, message):
    setup(tmp_path)
    code, err = run_main(["--adapters", str(tmp_path), "--port", "0"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_adapters_on_another_base_are_listed_not_loaded(tmp_path):
    for name in ("a", "b"):
        make_fake_adapter(tmp_path / name, run=run_record(name))
    other = tmp_path / "otherbase"
    other.mkdir()
    (other / "config.json").write_text("{}")
    make_fake_adapter(tmp_path / "c", run=run_record("c", base_model=str(other)))
    p = verb_plan("demo", ["--adapters", str(tmp_path), "--port", "0"])
    assert [a.name for a in p.adapters] == ["a", "b"] and p.base_ref == "models/base_model/smollm2-135m-instruct"
    assert p.skipped == (f"c: base {other} (one base per demo; --adapters a folder of its own)",)


# ---------------------------------------------------------------- slow: a real server (bundled base + a throwaway adapter)


def _free_port() -> int:
    return demo.free_port("127.0.0.1", 0)


@pytest.fixture(scope="module")
def tiny_adapters(tmp_path_factory):
    """DEMO_ADAPTERS=folder shows those instead (make demo-screenshot after make demo: the trained one)."""
    if os.environ.get("DEMO_ADAPTERS"):
        return Path(os.environ["DEMO_ADAPTERS"]), None
    from eval.fixtures import make_tiny_adapter

    root = tmp_path_factory.mktemp("demo_adapters")
    make_tiny_adapter(root / "tiny_a", seed=1, scale=0.3)  # large enough to change the answer
    return root, "tiny_a"


@pytest.fixture(scope="module")
def server(tiny_adapters):
    root, name = tiny_adapters
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the browser check's selenium stays out
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "-m", "lora", "demo", "--adapters", str(root), "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the demo did not answer within 300 s")
        time.sleep(1)
    yield url, name
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_gradio_client_gets_the_answers_lora_infer_gives(server, tiny_adapters, capsys):
    """Through the HTTP API: a preset row's text, the base and the adapter answer, and each answer is the one
    `finlora infer` gives for the same prompt, stop rule and budget (the demo switches adapters on one
    base; infer loads its own)."""
    from gradio_client import Client


    url, name = server
    if name is None:
        pytest.skip("DEMO_ADAPTERS given: this test needs the throwaway adapter")
    client = Client(url, verbose=False, analytics_enabled=False)
    rows, budget = client.predict("fpb", api_name="/pick_task")
    assert budget["value"] == 10 and len(rows["choices"]) == demo.PRESET_ROWS  # fpb's answer budget
    text, expected = client.predict("fpb", rows["choices"][3][1], api_name="/pick_row")
    assert expected == "positive" and "Answer:" in text
    table = client.predict([name], "fpb", text, 6, api_name="/ask")
    assert table["headers"] == ["", "base", name]
    answers = dict(zip(table["headers"][1:], table["data"][0][1:], strict=True))
    assert table["data"][1] == ["prompt", "chatml", "chatml"]
    adapter_dir = str(Path(tiny_adapters[0]) / name)
    for row, extra in (("base", ["--base"]), (name, [])):
        assert verb_main("infer", [adapter_dir, text, "--one-line", "--max-new-tokens", "6", *extra]) == 0
        assert answers[row] == capsys.readouterr().out.strip()
    assert answers["base"] != answers[name]  # the adapter changes the answer (seeded fixture; a no-op would not)
    with pytest.raises(Exception, match="choose at least one adapter"):
        client.predict([], "fpb", text, 6, api_name="/ask")


# ---------------------------------------------------------------- browser: headless Chromium (make demo-screenshot)


@pytest.fixture(scope="module")
def browser_selected(request):
    """-m slow alone must not need Chromium: the browser check runs when -m names it. Module scope and
    first in the test's arguments, so it decides before the server starts."""
    if "browser" not in (request.config.option.markexpr or ""):
        pytest.skip("the browser check runs with -m browser (make demo-screenshot)")


@pytest.mark.browser
@pytest.mark.slow  # -m "not slow" (make test-fast) replaces the default -m "not browser": keep it out there too
def test_browser_asks_and_saves_a_screenshot(browser_selected, server, tmp_path):
    """A real Chromium picks a preset row, asks, waits for the side-by-side answers and saves a screenshot
    (DEMO_SCREENSHOT=path; docs/demo-app.png from make demo-screenshot)."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, name = server
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1500", "--lang=en-US"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 300)
        task = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#task input")))
        task.click()
        task.send_keys("fpb")
        task.send_keys(Keys.ENTER)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#budget input[type=number]").get_attribute("value") == "10")
        row = driver.find_element(By.CSS_SELECTOR, "#row input")
        row.click()
        for _ in range(4):
            row.send_keys(Keys.ARROW_DOWN)
        row.send_keys(Keys.ENTER)
        wait.until(lambda d: "Answer:" in d.find_element(By.CSS_SELECTOR, "#text textarea").get_attribute("value"))
        driver.find_element(By.CSS_SELECTOR, "#ask").click()
        wait.until(lambda d: "seconds" in d.find_element(By.CSS_SELECTOR, "#answers").text)
        table = driver.find_element(By.CSS_SELECTOR, "#answers").text
        assert "base" in table and (name is None or name in table) and "chatml" in table
        out = Path(os.environ.get("DEMO_SCREENSHOT") or tmp_path / "demo.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        height = driver.execute_script(  # the whole page: Gradio scrolls inside its own container
            "return Math.max(...[document.body, document.documentElement, document.querySelector('gradio-app')]"
            ".filter(Boolean).map(e => e.scrollHeight))")
        driver.set_window_size(1400, min(max(height + 200, 900), 2600))
        time.sleep(1)  # let the page lay out at the new size
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    from PIL import Image

    with Image.open(out) as img:  # a palette PNG keeps docs/ small
        assert img.width >= 1000
        img.convert("RGB").quantize(colors=128).save(out, optimize=True)
    assert out.stat().st_size > 20_000
