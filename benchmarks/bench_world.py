"""Wall time of the demo, default and --quick: the whole run and each part of it (zoo build,
then every section), plus pretraining throughput.

Targets (issue 2): the default demo <= 600 s, the quick zoo <= 90 s on 2 CPU cores.
Prints one line per config and a JSON object on the last line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from disalign.demo import run_demo  # noqa: E402
from disalign.world import make_config  # noqa: E402


def measure(quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_demo(Path(tmp) / "demo", Path(tmp) / "zoo", make_config(quick=quick))
        seconds = time.perf_counter() - start
        training = json.loads((Path(tmp) / "zoo" / "summary.json").read_text())["training"]
    return {
        "seconds": round(seconds, 1),
        "section_seconds": summary["section_seconds"],
        "pretrain_tokens_per_s": training["base"]["tokens_per_second"],
        "pretrain_seconds": training["base"]["seconds"],
        "align_seconds": {m: training[m]["seconds"] for m in ("sft", "dpo", "unlearn")},
        "base_unsafe_harmful_rate": summary["models"]["base"]["unsafe"]["harmful_rate"],
    }


def main() -> None:
    configs = sys.argv[1:] or ["quick", "default"]
    results = {}
    for name in configs:
        results[name] = measure(quick=name == "quick")
        print(
            f"{name}: {results[name]['seconds']} s, pretraining {results[name]['pretrain_tokens_per_s']:.0f} tokens/s"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
