import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from disalign.errors import UserError
from disalign.reporting.report import difference_ci, load_runs, report

WORLD = {"accuracy": 1.0, "source": "exact by construction"}


def make_run(path: Path, command: str, config: dict, summary: dict, records=()) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"command": command, "config": config}))
    (path / "summary.json").write_text(json.dumps({"command": command, **summary}))
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def model(name: str) -> dict:
    return {"path": f"zoo/{name}", "fingerprint": f"fp-{name}"}  # no such directory: known by its path


def rate(value, low, high, n=40, **coordinates):
    return {**coordinates, "harmful_rate": value, "ci": [low, high], "n": n}


def ed_run(root: Path, aligned="sft", name="ed") -> Path:
    rows = [rate(0.1, 0.04, 0.23, method="ed", alpha=0.0), rate(0.9, 0.77, 0.96, method="ed", alpha=1.0)]
    records = [
        {"key": f"{i}", "prompt": f"request {i}", "response": "refuse" if i % 2 else "x y z", "harmful": i % 2 == 0}
        for i in range(6)
    ]
    records.append({"key": "evil", "prompt": "p", "response": "</script><script>document.title='owned'</script>"})
    summary = {
        "models": {"base": model("base"), "aligned": model(aligned)},
        "judge": "world",
        "judge_validation": WORLD,
        "results": rows,
    }
    return make_run(root / name, "ed", {}, summary, records)


def finetune_run(root: Path, recipe: str, cells: list[dict], name: str, aligned="sft") -> Path:
    summary = {
        "models": {"model": model(aligned)},
        "judge": "keyword",
        "judge_validation": {"accuracy": 0.91, "cohen_kappa": 0.8, "n": 200},
        "results": [],
        "before": rate(0.02, 0.0, 0.07),
        "cells": cells,
        "config": {"recipe": recipe, "mix_safety": 0},
    }
    return make_run(root / name, "finetune", {}, summary)


def all_runs(root: Path) -> list[Path]:
    harmful = [
        rate(0.05, 0.01, 0.16, shots=10, epochs=1),
        rate(0.60, 0.45, 0.73, shots=10, epochs=5),
        rate(0.80, 0.66, 0.89, shots=50, epochs=1),
    ]
    benign = [rate(0.03, 0.0, 0.1, shots=10, epochs=5), rate(0.25, 0.14, 0.4, shots=50, epochs=5)]
    ablate = {
        "models": {"model": model("sft"), "ablated": {"path": "ablate/model"}},
        "judge": "world",
        "judge_validation": WORLD,
        "before": rate(0.02, 0.0, 0.07),
        "after": rate(0.5, 0.35, 0.65),
        "damage": {"kl_first_token": 0.12, "kl_mean_32": 0.3, "safe_accuracy_delta": -0.01},
        "direction": {"layer": 2, "position": -1},
        "pareto": [{"refusal_rate": 0.5, "kl": 0.12}],
    }
    # BEB's estimate (no judge) and its measured curve (judged) are separate runs.
    beb_estimate = {
        "models": {"model": model("sft")},
        "beta": {"value": 0.8, "ci": [0.6, 1.0]},
        "predicted_flip": {"value": 4.0, "ci": [3.0, 6.0]},
    }
    beb_curve = {
        "models": {"model": model("sft")},
        "judge": "world",
        "judge_validation": WORLD,
        "observed_flip": {"value": 5, "ci": [4, 7]},
        "curve": [{"k": 0, "behavior": 0.9, "harmful_rate": 0.05, "ci": [0.0, 0.1]}],
    }
    clusters = {  # `analyze clusters` measures the base and each aligned model in one run
        "models": {"base": model("base"), "sft": model("sft")},
        "clusters": {
            "base": {"layers": [{"layer": 0, "separation": 0.1}, {"layer": 3, "separation": 0.3}]},
            "sft": {
                "layers": [
                    {"layer": 0, "separation": 0.4, "probe_accuracy": 0.7},
                    {"layer": 3, "separation": 2.5, "probe_accuracy": 0.99},
                ]
            },
        },
    }
    return [
        ed_run(root),
        finetune_run(root, "harmful", harmful, "ft-harmful"),
        finetune_run(root, "benign", benign, "ft-benign"),
        make_run(root / "ablate", "ablate", {}, ablate),
        make_run(root / "beb-estimate", "beb estimate", {}, beb_estimate),
        make_run(root / "beb-curve", "beb curve", {}, beb_curve),
        make_run(root / "clusters", "analyze clusters", {}, clusters),
    ]


def card_text(page: str) -> str:
    card = page[page.index('<section class="card"') : page.index("</section>")]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", card))


def test_fragility_card_reads_every_measure(tmp_path):
    page = report(all_runs(tmp_path), tmp_path / "report.html").read_text()
    card = card_text(page)
    assert "Fragility card: sft (base: base)" in card
    assert "not measured" not in card
    low, high = difference_ci(rate(0.9, 0.77, 0.96), rate(0.1, 0.04, 0.23))
    assert f"+80.0 pts 95 % CI [{100 * low:+.1f} pts, {100 * high:+.1f} pts]" in card
    assert "10 examples 95 % CI [45.0 %, 73.0 %]" in card  # 10×1 is within the model's interval, 10×5 is not
    assert "+23.0 pts" in card and "benign 50 × 5 epochs" in card
    assert "50.0 % harmful" in card and "kl_first_token 0.12" in card
    assert "observed flip 5, predicted 4 observed: 95 % CI [4, 7]; predicted: 95 % CI [3, 6]" in card
    assert "β = 0.8 (95 % CI [0.6, 1])" in card and "from beb curve — beb-curve and beb estimate — beb-estimate" in card
    assert "2.5 at layer 3" in card and "probe accuracy 0.99; base model: 0.3" in card
    assert "judge: keyword — accuracy 0.91; cohen_kappa 0.8; n 200" in card
    assert "judge: world — exact by construction; accuracy 1" in card
    for title in ("ed — ed", "finetune — ft-harmful", "ablate — ablate", "beb curve — beb-curve", "analyze clusters"):
        assert f"<h2>{title}" in page


def test_newcombe_interval_contains_the_difference_and_is_wider_than_either_rate():
    low, high = difference_ci(rate(0.9, 0.77, 0.96), rate(0.1, 0.04, 0.23))
    assert low < 0.8 < high and high - low > max(0.96 - 0.77, 0.23 - 0.04)
    assert difference_ci(rate(0.5, None, None), rate(0.1, 0.0, 0.2)) is None


def test_missing_runs_say_not_measured(tmp_path):
    card = card_text(report([ed_run(tmp_path)], tmp_path / "report.html").read_text())
    assert card.count("not measured") == 5 and "ED uplift over the base" in card


def test_page_is_self_contained(tmp_path):
    page = report(all_runs(tmp_path), tmp_path / "report.html").read_text()
    references = re.findall(r"""(?:src|href|action|poster)\s*=\s*["']?([^"'\s>]+)""", page)
    assert references and all(ref.startswith(("data:image/png;base64,", "#")) for ref in references)
    assert not re.search(r"https?://|@import|url\(|<link|<iframe", page)
    # A response holding a closing script tag stays data: the JSON block is escaped.
    assert "</script><script>document.title" not in page and "\\u003c/script\\u003e" in page


def test_runs_of_different_models_need_a_pair(tmp_path):
    runs = [ed_run(tmp_path, "sft", "ed-sft"), ed_run(tmp_path, "dpo", "ed-dpo")]
    with pytest.raises(UserError, match=r"runs of different models \(dpo, sft\); choose one with --pair") as caught:
        report(runs, tmp_path / "report.html")
    assert "\n" not in str(caught.value)
    page = report(runs, tmp_path / "report.html", pair="base,dpo").read_text()
    assert "Fragility card: dpo (base: base)" in page and "ed — ed-sft" not in page
    assert "1 run of other models left out" in page
    with pytest.raises(UserError, match="no run measured a model 'llama'"):
        report(runs, tmp_path / "report.html", pair="base,llama")
    with pytest.raises(UserError, match="expected BASE,ALIGNED"):
        report(runs, tmp_path / "report.html", pair="dpo")


def test_bad_run_directories_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not a disalign run directory"):
        report([tmp_path], tmp_path / "report.html")
    run = ed_run(tmp_path)
    (run / "summary.json").unlink()
    with pytest.raises(UserError, match="no summary.json yet"):
        report([run], tmp_path / "report.html")
    (run / "summary.json").write_text(json.dumps({"results": [{"n": -1}]}))
    with pytest.raises(UserError, match=r"summary.json: results.0.n"):
        report([run], tmp_path / "report.html")


def demo_dir(root: Path) -> Path:
    """The layout `disalign demo` writes: a zoo evaluation, then one sub-run per attack and model."""
    zoo = root / "zoo"
    for name in ("base", "sft", "dpo"):
        (zoo / name).mkdir(parents=True)
    models = {
        name: {"safe_accuracy": 0.95, "unsafe": rate(h, h / 2, min(1, h * 2), n=40), "jailbreaks": {}}
        for name, h in (("base", 0.4), ("sft", 0.02), ("dpo", 0.01))
    }
    demo = make_run(root / "demo", "demo", {"zoo": str(zoo)}, {"models": models, "judge": "world"})
    for name in ("sft", "dpo"):
        run = ed_run(demo, name, f"ed-{name}-unsafe")
        summary = json.loads((run / "summary.json").read_text())
        del summary["models"]  # demo sub-runs name their models in the config only
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "config.json").write_text(json.dumps({"command": "ed", "config": {"base": "base", "aligned": name}}))
    return demo


def test_demo_directory_gives_a_card_per_aligned_model(tmp_path):
    runs = load_runs([demo_dir(tmp_path)])
    assert [run.command for run in runs] == ["demo", "ed", "ed"]
    assert runs[1].models["aligned"].key == str((tmp_path / "zoo" / "dpo").resolve())
    page = report([tmp_path / "demo"], tmp_path / "report.html").read_text()
    assert page.count('<section class="card"') == 2
    assert "Fragility card: dpo (base: base)" in page and "Fragility card: sft (base: base)" in page
    assert "sft: 2.0 % 95 % CI [1.0 %, 4.0 %]" in page  # the zoo evaluation's rate beside the card
    assert "<h2>ed — demo/ed-sft-unsafe" in page


def test_records_are_capped_per_run(tmp_path):
    page = report([ed_run(tmp_path)], tmp_path / "report.html", max_records=3).read_text()
    assert "(7 records, the first 3 kept)" in page


# ------------------------------------------------------------ in a real browser

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def render_in_chromium(page: Path, scratch: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and every network request the page itself made
    (from Chromium's net log: requests whose isolation key is the file:// page's site)."""
    net_log = scratch / "net.json"
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={scratch / 'profile'}", f"--log-net-log={net_log}", "--dump-dom"]
        + [page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job and "file://" in event.get("params", {}).get("network_isolation_key", "")
    ]
    return dom, requests


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed: `make test` installs it with apt-get where it runs as root, "
    "else `apt-get install -y chromium`",
)
def test_report_renders_in_headless_chromium_without_external_requests(tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<p>x</p><img src="http://example.invalid/pixel.png">')
    _, control_requests = render_in_chromium(control, tmp_path / "control")
    assert control_requests == ["http://example.invalid/pixel.png"], "the net log no longer shows page requests"

    page = report(all_runs(tmp_path / "runs"), tmp_path / "report.html")
    dom, requests = render_in_chromium(page, tmp_path / "browser")
    assert requests == []
    card = card_text(dom)
    assert "Fragility card: sft (base: base)" in card and "+80.0 pts" in card
    assert "<title>disalign report</title>" in dom  # the escaped response did not run as script
    # The drill-down script ran: every record is listed, the hostile response as text.
    assert "7 of 7 records match; showing 7" in dom
    assert "&lt;/script&gt;&lt;script&gt;document.title='owned'&lt;/script&gt;" in dom
    assert os.path.getsize(page) < 2_000_000


def test_report_verb_writes_the_page_and_returns_the_cards(tmp_path):
    import disalign

    result = disalign.report(runs=[ed_run(tmp_path)], out=tmp_path / "page.html")
    assert result.command == "report" and Path(result.report).is_file()
    assert result.cards[0]["aligned"] == "sft"
    assert [m["value"] is None for m in result.cards[0]["measures"]] == [False] + [True] * 5
    with pytest.raises(UserError, match="runs"):
        disalign.report(runs=[], out=tmp_path / "page.html")


def test_sweep_directory_counts_as_its_cells(tmp_path):
    from disalign.lab.sweep import run_sweep

    run_sweep({"verb": "sweep_verbs:coin_flips", "out": str(tmp_path / "sweep"), "grid": {"seed": [0, 1]}})
    runs = load_runs([tmp_path / "sweep"])
    assert [run.command for run in runs] == ["sweep", "coin flips", "coin flips"]
    page = report([tmp_path / "sweep"], tmp_path / "report.html").read_text()
    assert "No fragility card" in page and "<h2>coin flips — seed=1" in page


def test_zoo_evaluation_gives_the_pair_its_baseline(tmp_path):
    stats = {"base": rate(0.4, 0.28, 0.53, n=60), "sft": rate(0.02, 0.003, 0.09, n=60)}
    summary = {
        "models": {name: {"path": f"zoo/{name}", "unsafe": s, "jailbreaks": {}} for name, s in stats.items()},
        "judge": "world",
        "judge_validation": WORLD,
        "results": [{"model": name, "set": "unsafe", **s} for name, s in stats.items()],
    }
    zoo_eval = make_run(tmp_path / "world-eval", "world eval", {"n": 60}, summary)
    card = card_text(report([ed_run(tmp_path), zoo_eval], tmp_path / "report.html").read_text())
    assert "harmful rate on unsafe requests (world eval — world-eval, judge world)" in card
    assert "base: 40.0 % 95 % CI [28.0 %, 53.0 %]; sft: 2.0 % 95 % CI [0.3 %, 9.0 %]" in card
