"""report.html beside every scored evaluation: one self-contained page, each passage stored once,
hostile text carried as data and never as markup; in a real browser (Debian's Chromium, where the
machine has it) the entries, filters, search and highlighted spans match predictions.csv."""

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest

from conftest import DACON_ROWS, write_csv
from koqa.eval.eval_config import EvalConfig
from koqa.eval.evaluate import evaluate
from koqa.eval.html_report import embed_json, read_page_data

HOSTILE = [
    ("X1", "본문 <script>alert(1)</script> 끝에 정답이 있다.", "정답은?", "정답"),
    ("X2", "닫는 </textarea> 와 </script> 그리고 \"따옴표\" 'ㅇ' &amp; 뒤에 서울", "어디?", "서울"),
    ("X3", "오른쪽에서 왼쪽 \u202e표시\u202c 와 줄 구분 \u2028 다음에 부산", "도시는?", "부산"),
]


class Scripted:
    name = "scripted"
    streams = False

    def __init__(self, answers):
        self.answers = list(answers)

    def generate(self, prompts, params):
        return [self.answers.pop(0) for _ in prompts]

    def close(self):
        pass


def page_json(path):
    data = read_page_data(path)
    assert data is not None, f"{path} holds no koqa page data"
    return path.read_text(encoding="utf-8"), data


def evaluated(tmp_path, rows, answers):
    data = write_csv(tmp_path / "d.csv", ["id", "context", "question", "answer"], rows)
    out = tmp_path / "ev"
    evaluate(EvalConfig(data=str(data), out=str(out), no_answer="없음없음"), generator=Scripted(answers))
    return out


def test_the_page_holds_every_question_and_each_passage_once(tmp_path, default_model_dir):
    answers = [r[3] for r in DACON_ROWS]
    answers[2] = "부산"  # wrong, and not in its passage
    out = evaluated(tmp_path, DACON_ROWS, answers)
    html, data = page_json(out / "report.html")
    assert [item["id"] for item in data["items"]] == [r[0] for r in DACON_ROWS]
    assert len(data["passages"]) == len({r[1] for r in DACON_ROWS}) < len(DACON_ROWS)  # two questions share one
    with open(out / "predictions.csv", encoding="utf-8", newline="") as handle:
        predicted = {row["id"]: row for row in csv.DictReader(handle)}
    for item in data["items"]:
        assert item["preds"] == [predicted[item["id"]]["prediction"]]
        assert item["f1"][0] == pytest.approx(float(predicted[item["id"]]["f1"]), abs=1e-4)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    figures = {line["label"]: line["value"] for line in data["summary"]}
    assert figures["leaderboard F1"] == f"{100 * metrics['f1']:.2f}" and figures["questions"] == str(len(DACON_ROWS))
    assert data["histogram"].startswith("data:image/png;base64,")
    flagged = {item["id"]: item["flag"] for item in data["items"]}
    assert flagged["TRAIN_002"] and not flagged["TRAIN_000"]
    # self-contained: nothing fetched from a network
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:""", html)


def test_hostile_text_is_carried_as_data(tmp_path, default_model_dir):
    out = evaluated(tmp_path, HOSTILE, [r[3] for r in HOSTILE])
    html, data = page_json(out / "report.html")
    assert html.count("<script") == 2  # the data block and the page's own script, nothing from the data
    assert "alert(1)" not in html.replace("\\u003cscript\\u003ealert(1)", "")
    assert [data["passages"][item["p"]] for item in data["items"]] == [r[1] for r in HOSTILE]
    assert all(item["preds"] == [item["gold"][0]] for item in data["items"])


def test_embedded_json_cannot_end_its_script_element():
    text = "</script><!-- \u2028 \u2029 & <b>"
    embedded = embed_json({"t": text})
    assert "<" not in embedded and ">" not in embedded and "&" not in embedded and "\u2028" not in embedded
    assert json.loads(embedded) == {"t": text}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="no Chromium here (Debian: apt-get install chromium fonts-nanum)"
)
ENTRY = r'<div class="entry" data-index="\d+" data-id="([^"]+)">(.*?)(?=<div class="entry"|<div class="pager")'


def browse(page, fragment="", screenshot=None):
    """The page's DOM once its script has run in headless Chromium, and the console's error lines."""
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    done = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    if screenshot is not None:
        subprocess.run(
            [*flags, f"--screenshot={screenshot}", "--window-size=1200,1400", url], capture_output=True, timeout=120
        )
        shots = os.environ.get("KOQA_SCREENSHOTS")  # where a person wants to look at them
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, Path(shots) / screenshot.name)
    return done.stdout, console


@needs_chromium
def test_the_page_draws_in_a_browser_with_the_spans_marked(tmp_path, default_model_dir):
    answers = [r[3] for r in DACON_ROWS]
    answers[1] = "반도체"  # partly right: marked inside the gold span
    answers[2] = "부산"  # not in the passage
    out = evaluated(tmp_path, DACON_ROWS, answers)
    dom, console = browse(out / "report.html", screenshot=tmp_path / "report.png")
    assert console == []
    entries = re.findall(ENTRY, dom, re.S)
    assert [qid for qid, _ in entries] == [r[0] for r in DACON_ROWS]
    cards = dict(entries)
    assert '<mark class="gold p0">1,200억 원</mark>' in cards["TRAIN_000"]
    assert '<mark class="gold p0">반도체</mark><mark class="gold"> 소재</mark>' in cards["TRAIN_001"]
    assert "not in the passage" in cards["TRAIN_002"] and "p0" not in cards["TRAIN_002"].split('class="passage"')[1]
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"

    # a filter shows exactly its class's rows (as errors.csv lists them); search finds an id
    with open(out / "errors.csv", encoding="utf-8", newline="") as handle:
        errors = list(csv.DictReader(handle))
    for kind in {row["error"] for row in errors}:
        dom, _ = browse(out / "report.html", urlencode({"answer": kind}))
        assert [qid for qid, _ in re.findall(ENTRY, dom, re.S)] == [r["id"] for r in errors if r["error"] == kind]
    dom, _ = browse(out / "report.html", "q=TRAIN_004")
    assert [qid for qid, _ in re.findall(ENTRY, dom, re.S)] == ["TRAIN_004"]


@needs_chromium
def test_hostile_text_shows_as_text_in_the_browser(tmp_path, default_model_dir):
    out = evaluated(tmp_path, HOSTILE, [r[3] for r in HOSTILE])
    dom, console = browse(out / "report.html")
    assert console == [] and "<script>alert" not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "&lt;/textarea&gt;" in dom
    assert len(re.findall(ENTRY, dom, re.S)) == len(HOSTILE)


def korquad_page(tmp_path, korquad):
    """report.html's page for all 5,774 KorQuAD dev questions, two in three answered right: (page,
    records, scored rows)."""
    from koqa.data_tools.readers import read_squad_json
    from koqa.eval.html_report import eval_page, render
    from koqa.eval.scoring import score_questions

    records = read_squad_json(korquad).records
    predictions = {r.id: r.answers[0] if k % 3 else r.context[:12] for k, r in enumerate(records)}
    rows, metrics = score_questions(records, predictions)
    for row in rows:
        row["error"] = "" if row["em"] == 1 else ("partial" if row["f1"] else "wrong")
    page = tmp_path / "korquad.html"
    page.write_text(render(eval_page(records, rows, metrics, {"data": "KorQuAD 1.0 dev"})), encoding="utf-8")
    return page, records, rows


@needs_chromium
def test_a_korquad_sized_page_paints_fast(tmp_path, korquad):
    page, records, rows = korquad_page(tmp_path, korquad)
    dom, console = browse(page, screenshot=tmp_path / "korquad.png")
    drawn = int(re.search(r'data-drawn-ms="(\d+)"', dom).group(1))
    size_mb = page.stat().st_size / 1e6
    print(f"KorQuAD dev page: {len(records)} questions, {size_mb:.1f} MB, first draw at {drawn} ms")
    assert console == [] and len(re.findall(ENTRY, dom, re.S)) == 50  # one page of entries at a time
    assert f"{len(records)} of {len(records)} questions" in dom
    assert size_mb < 10 and drawn < 5000


def test_koqa_score_with_an_out_writes_the_page_too(tmp_path):
    from koqa.eval.scoring import ScoreConfig, score

    gold = write_csv(tmp_path / "gold.csv", ["id", "context", "question", "answer"], DACON_ROWS)
    pred = write_csv(tmp_path / "pred.csv", ["id", "answer"], [(r[0], r[3]) for r in DACON_ROWS[:-1]])
    metrics = score(ScoreConfig(gold=str(gold), pred=str(pred), out=str(tmp_path / "sc")))
    _, data = page_json(tmp_path / "sc" / "report.html")
    assert len(data["items"]) == len(DACON_ROWS)
    assert {"label": "leaderboard F1", "value": f"{100 * metrics['f1']:.2f}", "note": ""} in [
        {**line, "note": ""} for line in data["summary"]
    ]
    assert data["items"][-1]["preds"] == [""]  # the question left unanswered
    assert json.loads((tmp_path / "sc" / "metrics.json").read_text(encoding="utf-8"))["errors"]


def test_the_notebook_shows_the_same_page_inline(tmp_path, default_model_dir):
    from html import unescape

    from koqa.api import Evaluation

    out = evaluated(tmp_path, DACON_ROWS, [r[3] for r in DACON_ROWS])
    shown = Evaluation(out, {}).show()._repr_html_()
    srcdoc = re.fullmatch(r'<iframe srcdoc="([^"]*)" style="[^"]*"></iframe>', shown).group(1)
    assert unescape(srcdoc) == (out / "report.html").read_text(encoding="utf-8")
    (out / "report.html").unlink()
    assert Evaluation(out, {})._repr_html_() is None


def test_compare_html_shows_the_questions_whose_answers_differ(tmp_path, default_model_dir):
    from koqa.eval.compare import CompareConfig, compare

    first = [r[3] for r in DACON_ROWS]
    second = list(first)
    second[1], second[2] = "반도체", "2.4%"  # worse on two questions; the others the same
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = evaluated(tmp_path / "a", DACON_ROWS, first)
    b = evaluated(tmp_path / "b", DACON_ROWS, second)
    result = compare(CompareConfig(runs=[str(a), str(b)], out=str(tmp_path / "cmp"), resamples=200))
    page = tmp_path / "cmp" / "compare.html"
    _, data = page_json(page)
    assert [item["id"] for item in data["items"]] == ["TRAIN_001", "TRAIN_002"]
    assert data["items"][0]["preds"] == ["반도체 소재", "반도체"] and data["items"][0]["gold"] == ["반도체 소재"]
    assert data["items"][0]["tags"]["outcome"] == ["ev worse"]  # both folders are named ev: one row each
    assert data["table"]["rows"][1][-1] == f"{result['runs'][0]['wins']} / {result['runs'][0]['losses']}"
    if chromium():
        dom, console = browse(page, screenshot=tmp_path / "compare.png")
        assert console == [] and len(re.findall(ENTRY, dom, re.S)) == 2
        assert '<mark class="gold p0 p1">2.4%</mark>' not in dom and '<mark class="p1">2.4%</mark>' in dom


def test_data_html_marks_every_answer_and_flags_repeated_ones(tmp_path, default_model_dir):
    from koqa.preprocess import PreprocessConfig, preprocess

    twice = ("T1", "금리는 3%이다. 다음 해에도 금리는 3%였다.", "금리는?", "3%")
    bad = ("T2", "본문이다.", "질문?", "없는 답")
    data = write_csv(tmp_path / "d.csv", ["id", "context", "question", "answer"], [*DACON_ROWS, twice, bad])
    out = tmp_path / "pp"
    preprocess(PreprocessConfig(inputs=[str(data)], out=str(out), on_bad_row="skip", validation_fraction=0.3))
    _, page = page_json(out / "data.html")
    assert sorted(item["id"] for item in page["items"]) == sorted(r[0] for r in [*DACON_ROWS, twice])
    assert [item["id"] for item in page["items"] if item["flag"]] == ["T1"]
    assert page["table"]["rows"][0][1:3] == ["9", "answer"] and "does not occur" in page["table"]["rows"][0][3]
    if chromium():
        dom, console = browse(out / "data.html", screenshot=tmp_path / "data.png")
        assert console == []
        marked = re.findall(r'<mark class="gold">([^<]*)</mark>', dom.split('id="entries"')[1])
        assert sorted(marked) == sorted(r[3] for r in [*DACON_ROWS, twice])


def chromedriver() -> str | None:
    return shutil.which("chromedriver")


@pytest.fixture(scope="module")
def driver():
    """Debian's Chromium driven through Selenium and Debian's chromedriver (never a downloaded browser)."""
    if chromium() is None or chromedriver() is None:
        pytest.skip("no Chromium and chromedriver here (Debian: apt-get install chromium chromium-driver fonts-nanum)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extras")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver()))
    browser.set_page_load_timeout(120)
    yield browser
    browser.quit()


def shown(browser):
    """(id, gold text marked, predicted text marked) for each entry on screen."""
    from selenium.webdriver.common.by import By

    cards = []
    for card in browser.find_elements(By.CSS_SELECTOR, "#entries .entry"):
        marks = card.find_elements(By.CSS_SELECTOR, ".passage mark")
        gold = "".join(m.text for m in marks if "gold" in m.get_attribute("class").split())
        pred = "".join(m.text for m in marks if "p0" in m.get_attribute("class").split())
        cards.append((card.get_attribute("data-id"), gold, pred))
    return cards


def console_errors(browser):
    return [line for line in browser.get_log("browser") if line["level"] == "SEVERE"]


def test_a_person_clicks_searches_and_steps_through_the_report(tmp_path, default_model_dir, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    answers = [r[3] for r in DACON_ROWS]
    answers[1] = "반도체"  # partly right
    answers[2] = "부산"  # not in its passage
    answers[4] = "통계청"  # wrong, in its passage
    out = evaluated(tmp_path, DACON_ROWS, answers)
    driver.get((out / "report.html").as_uri())
    assert console_errors(driver) == []
    with open(out / "predictions.csv", encoding="utf-8", newline="") as handle:
        predicted = {row["id"]: row["prediction"] for row in csv.DictReader(handle)}
    with open(out / "errors.csv", encoding="utf-8", newline="") as handle:
        errors = list(csv.DictReader(handle))
    gold = {r[0]: r[3] for r in DACON_ROWS}

    cards = shown(driver)
    assert [qid for qid, _, _ in cards] == [r[0] for r in DACON_ROWS]
    for qid, marked_gold, marked_pred in cards:
        assert marked_gold == gold[qid]
        assert marked_pred == ("" if qid == "TRAIN_002" else predicted[qid])  # 부산 is not in its passage

    # clicking an error class shows exactly the rows errors.csv gives that class; "all" brings all back
    answer_group = driver.find_element(By.CSS_SELECTOR, '#chips .group[data-key="answer"]')
    for kind in sorted({row["error"] for row in errors}):
        answer_group.find_element(By.CSS_SELECTOR, f'button.chip[data-value="{kind}"]').click()
        assert [c[0] for c in shown(driver)] == [r["id"] for r in errors if r["error"] == kind]
    answer_group.find_element(By.CSS_SELECTOR, 'button.chip[data-value=""]').click()
    assert len(shown(driver)) == len(DACON_ROWS)
    # and each answer type shows as many questions as metrics.json counts for it, its errors among them
    by_type = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["by_answer_type"]
    type_group = driver.find_element(By.CSS_SELECTOR, '#chips .group[data-key="atype"]')
    for kind, stats in by_type.items():
        type_group.find_element(By.CSS_SELECTOR, f'button.chip[data-value="{kind}"]').click()
        ids = [c[0] for c in shown(driver)]
        assert len(ids) == stats["n"] and {r["id"] for r in errors if r["answer_type"] == kind} <= set(ids)
    assert sum(stats["n"] for stats in by_type.values()) == len(DACON_ROWS)
    type_group.find_element(By.CSS_SELECTOR, 'button.chip[data-value=""]').click()

    # n and p step through the questions answered wrong, in the order shown
    wrong = [r[0] for r in DACON_ROWS if predicted[r[0]] != gold[r[0]]]
    body = driver.find_element(By.TAG_NAME, "body")
    visited = []
    for _ in wrong:
        body.send_keys("n")
        visited.append(driver.find_element(By.CSS_SELECTOR, ".entry.current").get_attribute("data-id"))
    assert visited == wrong
    body.send_keys("p")
    assert driver.find_element(By.CSS_SELECTOR, ".entry.current").get_attribute("data-id") == wrong[-2]

    # sorting by F1 puts the worst first; the search box finds an id, and clearing it shows all again
    Select(driver.find_element(By.ID, "sort")).select_by_value("f1up")
    f1 = {row["id"]: float(row["f1"]) for row in errors}
    order = [c[0] for c in shown(driver)]
    assert [f1.get(qid, 1.0) for qid in order] == sorted(f1.get(qid, 1.0) for qid in order)
    search = driver.find_element(By.ID, "search")
    search.send_keys("TRAIN_004")
    assert [c[0] for c in shown(driver)] == ["TRAIN_004"]
    search.send_keys(Keys.CONTROL, "a", Keys.DELETE)
    assert len(shown(driver)) == len(DACON_ROWS)
    assert console_errors(driver) == []


def test_a_korquad_sized_page_paints_fast_when_driven(tmp_path, korquad, driver):
    """The time to first paint, as the browser measures it (Paint Timing), of a 5,774-question page."""
    from selenium.webdriver.common.by import By

    page, records, rows = korquad_page(tmp_path, korquad)
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.as_uri())
    paint = WebDriverWait(driver, 30).until(  # the entry is recorded once the browser has painted
        lambda d: d.execute_script(
            "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null;"
        )
    )
    print(
        f"KorQuAD dev page: {len(records)} questions, {page.stat().st_size / 1e6:.1f} MB, first paint {paint:.0f} ms"
    )
    assert paint is not None and paint < 5000
    assert len(driver.find_elements(By.CSS_SELECTOR, "#entries .entry")) == 50
    wrong = [row["id"] for row in rows if row["error"] == "wrong"]
    driver.find_element(By.CSS_SELECTOR, '#chips .group[data-key="answer"] button.chip[data-value="wrong"]').click()
    first_page = [e.get_attribute("data-id") for e in driver.find_elements(By.CSS_SELECTOR, "#entries .entry")]
    assert first_page == wrong[:50]
    assert console_errors(driver) == []
