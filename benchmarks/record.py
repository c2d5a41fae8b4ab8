"""Benchmark: recording speed and host memory of brainalign.record against its peers.

Rows (tokens/s over the same context windows and batches):

(a) bare      the model's own forward pass through its blocks (``model.model``, no LM
              head, no hooks): the speed limit.
(b) brainalign ``record_story`` recording ``mlp.inner`` of every layer, pooled to words on
              the device and streamed to disk (alignment, hooks, pooling, copies, writes,
              checksums and manifest all included in the time).
(c) tr        ``record_story(..., to_tr=True, dtype="float16")``: the same, but each
              batch's word rows are resampled to the scan's 2 s TR grid and z-scored per
              run on the device; only float16 TR rows reach the host and the disk.
(d) naive     a forward hook per layer that keeps ``.float().cpu()`` of every token's
              ``mlp.inner`` in a Python list (what most research code does).
(e) tr_memory ``record_timecourses(..., dtype="float16")``: (c) held in host memory instead
              of written to disk (each finished run's rows are copied while the model reads
              the next run).

(b) stores float16 on CUDA and float32 on CPU (the defaults). Both runs measure the disk's
write bandwidth in the output folder (written then fsynced, and streamed with early
writeback: the faster counts) and the recorder's storage stage alone (2 GiB of float16
rows in 32 shards through its host buffers, writer and hashing threads, no model) against
it. On CUDA the run also measures the device -> pinned host copy bandwidth, and reports
bytes per story token of (b) and (c) with the bound
``min(bare, d2h / bytes per token, disk / bytes per token)`` in tokens/s.

On CUDA: a Llama-3-8B-shaped and a Llama-3.2-1B-shaped model built from configs with
random bf16 weights (no download); word rows on one run of 8 windows x 1024 tokens, TR rows
(c, e) on four such runs (a session of four scans; the bare forward is timed on both
stories). On CPU: SmolLM2-135M on the
bundled story. The CPU run also records host memory (peak RSS above the level before the
call) at two story lengths, word rows and TR rows. Writes JSON (default
``benchmarks/results/record.json``).

    python benchmarks/record.py [--device cuda|cpu] [--tokenizer DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from brainalign.models.registry import DEFAULT_CAUSAL_MODEL, LoadedModel, load_model
from brainalign.models.sites import resolve_sites
from brainalign.provenance import provenance_block
from brainalign.record import (align_words, context_policy, plan_windows, record_story,
                               record_timecourses)
from brainalign.record import store
from brainalign.record.recorder import _DiskPipeline, _make_batch
from brainalign.record.store import DISK_DTYPES, ShardWriter
from brainalign.stimuli import bundled_story
from brainalign.stimuli.story import Story, Word

RESULTS = Path(__file__).resolve().parent / "results" / "record.json"

#: Llama-3 shapes (public configs), built with random weights.
GPU_SHAPES = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_growth(function) -> tuple[int, float]:
    """Peak resident memory above the level before ``function`` (sampled every 5 ms)."""
    baseline, peak, running = _rss_bytes(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    thread = threading.Thread(target=sample)
    thread.start()
    started = time.perf_counter()
    try:
        function()
    finally:
        seconds = time.perf_counter() - started
        running[0] = False
        thread.join()
    return max(peak[0], _rss_bytes()) - baseline, seconds


def repeat_story(words: list[str], n_words: int, name: str) -> Story:
    """A story of ``n_words`` words cycling through ``words``, 0.3 s each, one run, with a
    2 s scan from 0 s that covers every word."""
    texts = [words[i % len(words)] for i in range(n_words)]
    story = Story(name, tuple(Word(t, 0.3 * i, 0.3 * i + 0.25) for i, t in enumerate(texts)))
    return story.with_scan(2.0, [int(0.3 * (n_words - 1) / 2.0) + 2], first_volume_s=0.0)


def story_for_tokens(tokenizer, n_tokens: int, name: str) -> Story:
    """The bundled story's words, repeated until they make ``n_tokens`` tokens."""
    words = bundled_story().texts
    per_word = align_words(tokenizer, words).n_tokens / len(words)
    n_words = int(n_tokens / per_word) + 1
    story = repeat_story(words, n_words, name)
    while align_words(tokenizer, story.texts).n_tokens > n_tokens:
        n_words -= max(1, n_words // 200)
        story = repeat_story(words, n_words, name)
    return story


def recorder_batches(loaded, story, context_tokens, stride_tokens, batch_size):
    """The alignment, windows and padded batches that ``record_story`` would feed the model."""
    alignment = align_words(loaded.tokenizer, story.texts)
    policy = context_policy(loaded, len(alignment.prefix_ids) + len(alignment.suffix_ids),
                            context_tokens, stride_tokens)
    windows = plan_windows(alignment, policy)
    pad_id = loaded.tokenizer.pad_token_id or 0
    batches = [_make_batch(alignment, windows[i:i + batch_size], pad_id, loaded.device)
               for i in range(0, len(windows), batch_size)]
    return alignment, windows, batches


def time_bare(loaded, story, context_tokens, stride_tokens, batch_size) -> dict:
    """(a): the blocks' forward pass over the recorder's windows and batches."""
    device = loaded.device
    alignment, windows, batches = recorder_batches(loaded, story, context_tokens,
                                                   stride_tokens, batch_size)
    base = loaded.model.get_decoder() if hasattr(loaded.model, "get_decoder") else loaded.model
    with torch.inference_mode():
        base(input_ids=batches[0].input_ids, use_cache=False)  # warm-up
        _sync(device)
        started = time.perf_counter()
        for batch in batches:
            base(input_ids=batch.input_ids, use_cache=False)
        _sync(device)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "story_tokens": alignment.n_tokens,
            "tokens_fed": int(sum(b.n_tokens_fed for b in batches)),
            "n_windows": len(windows), "tok_s": alignment.n_tokens / seconds}


def warm_up_story(story: Story) -> Story:
    """The story's first 64 words, with a 2 s scan covering them (warms up either route)."""
    words = story.words[:64]
    return Story(f"{story.name}-warm-up", words).with_scan(
        2.0, [int(words[-1].onset_s / 2.0) + 2], first_volume_s=0.0)


def time_brainalign(loaded, story, context_tokens, stride_tokens, batch_size, out_dir,
                    **options) -> dict:
    """(b), or (c) with ``to_tr=True``: record_story, mlp.inner of all layers, streamed to disk."""
    kwargs = dict(context_tokens=context_tokens, stride_tokens=stride_tokens,
                  batch_size=batch_size, overwrite=True, progress=False, **options)
    out_dir.mkdir(parents=True, exist_ok=True)
    warm_up = warm_up_story(story)
    record_story(loaded, warm_up, ["mlp.inner"], out_dir / "warm-up", **kwargs)
    _sync(loaded.device)
    timed = Path(tempfile.mkdtemp(dir=out_dir))  # fresh: a finished recording would be skipped
    started = time.perf_counter()
    path = record_story(loaded, story, ["mlp.inner"], timed, **kwargs)
    _sync(loaded.device)
    seconds = time.perf_counter() - started
    manifest = json.loads((path / "manifest.json").read_text())
    bytes_written = sum(f.stat().st_size for f in path.rglob("*.npy")  # the values only
                        if f.parent.name != "tokens")
    shutil.rmtree(timed)
    return {"seconds": seconds, "story_tokens": manifest["n_tokens"],
            "n_words": manifest["n_words"], "n_tr": manifest.get("n_tr"),
            "n_neurons": manifest["n_neurons"], "dtype": manifest["dtype"],
            "grid": manifest["grid"], "bytes_written": bytes_written,
            "bytes_per_token": bytes_written / manifest["n_tokens"],
            "tok_s": manifest["n_tokens"] / seconds}


def time_memory(loaded, story, context_tokens, stride_tokens, batch_size, **options) -> dict:
    """(e): record_timecourses, mlp.inner of all layers, TR rows held in host memory."""
    kwargs = dict(context_tokens=context_tokens, stride_tokens=stride_tokens,
                  batch_size=batch_size, progress=False, **options)
    warm_up = warm_up_story(story)
    record_timecourses(loaded, warm_up, ["mlp.inner"], **kwargs)
    _sync(loaded.device)
    started = time.perf_counter()
    timecourses = record_timecourses(loaded, story, ["mlp.inner"], **kwargs)
    _sync(loaded.device)
    seconds = time.perf_counter() - started
    n_story_tokens = align_words(loaded.tokenizer, story.texts).n_tokens
    held = timecourses.data.nbytes
    return {"seconds": seconds, "story_tokens": n_story_tokens, "n_tr": timecourses.n_tr,
            "n_neurons": timecourses.n_neurons, "dtype": str(timecourses.data.dtype),
            "grid": "tr", "bytes_held": held, "bytes_per_token": held / n_story_tokens,
            "tok_s": n_story_tokens / seconds}


def device_to_host_bandwidth(device: torch.device, n_bytes: int = 2**30) -> float:
    """Bytes/s of one device -> pinned host copy of ``n_bytes`` (best of 3)."""
    source = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    target = torch.empty(n_bytes, dtype=torch.uint8, pin_memory=True)
    best = float("inf")
    for _ in range(3):
        _sync(device)
        started = time.perf_counter()
        target.copy_(source, non_blocking=True)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    del source, target
    return n_bytes / best


def disk_write_bandwidth(folder: Path, n_bytes: int = 2**31) -> dict:
    """Bytes/s of writing ``n_bytes`` to a new file in ``folder`` and fsyncing it, two ways
    (best of 2 each): ``serial``, every block into the page cache and then one fsync; and
    ``streamed``, each 64 MiB block handed to the disk as soon as it is written
    (``sync_file_range``, Linux only) before the final fsync. ``disk`` is the faster: the
    rate the disk sustains, the bound a recording is measured against."""
    block = os.urandom(2**26)
    rates = {}
    for way in ("serial", "streamed"):
        if way == "streamed" and store.sync_file_range is None:
            continue
        best = float("inf")
        for attempt in range(2):
            path = folder / f"disk-bandwidth-{attempt}.bin"
            started = time.perf_counter()
            with open(path, "wb") as handle:
                for index in range(n_bytes // len(block)):
                    handle.write(block)
                    if way == "streamed":
                        handle.flush()
                        store.sync_file_range(handle.fileno(), index * len(block), len(block),
                                              store.SYNC_FILE_RANGE_WRITE)
                handle.flush()
                os.fsync(handle.fileno())
            best = min(best, time.perf_counter() - started)
            path.unlink()
        rates[f"disk_{way}"] = n_bytes // len(block) * len(block) / best
    return {"disk": max(rates.values()), **rates}


def storage_row(device: torch.device, folder: Path, bandwidth: dict, n_bytes: int = 2**31,
                n_shards: int = 32, width: int = 14336) -> dict:
    """The recorder's storage stage alone, no model: ``n_bytes`` of float16 rows in
    ``n_shards`` shards of ``width`` columns (the 8B shape's layers), from ``device``
    through the recorder's host buffers, writer and hashing threads to disk, 256 rows per
    shard at a time as a batch's word rows arrive. Its rate against the disk's."""
    rows = torch.randn(256, width, device=device).to(torch.float16)
    n_rows = n_bytes // (n_shards * width * 2) // len(rows) * len(rows)
    writers = {f"s{i:02d}": ShardWriter(folder / f"storage-{i:02d}.npy", (n_rows, width),
                                        DISK_DTYPES["float16"]) for i in range(n_shards)}
    _sync(device)
    started = time.perf_counter()
    pipeline = _DiskPipeline(writers, width, torch.float16, device)
    for _ in range(n_rows // len(rows)):
        for key in writers:
            pipeline.write(key, rows)
    pipeline.close()
    for writer in writers.values():
        writer.close()
    seconds = time.perf_counter() - started
    for writer in writers.values():
        Path(writer.path).unlink()
    written = n_rows * width * 2 * n_shards
    return {"bytes": written, "n_shards": n_shards, "seconds": seconds,
            "bytes_per_s": written / seconds, "ratio_vs_disk": written / seconds / bandwidth["disk"]}


def bound_tok_s(bare_tok_s: float, bytes_per_token: float, d2h: float, disk: float) -> float:
    """Fastest possible recording: the forward pass, or moving its bytes to host and disk."""
    return min(bare_tok_s, d2h / bytes_per_token, disk / bytes_per_token)


def time_naive(loaded, story, context_tokens, stride_tokens, batch_size) -> dict:
    """(c): per-layer hooks keeping ``.float().cpu()`` of every token in a list."""
    device = loaded.device
    alignment, windows, batches = recorder_batches(loaded, story, context_tokens,
                                                   stride_tokens, batch_size)
    sites = resolve_sites(loaded.model, ["mlp.inner"])
    kept: list[torch.Tensor] = []
    modules = dict(loaded.model.named_modules())
    handles = [modules[s.module_path].register_forward_pre_hook(
        lambda module, args: kept.append(args[0].float().cpu())) for s in sites]
    try:
        with torch.inference_mode():
            loaded.model(input_ids=batches[0].input_ids, use_cache=False)
            kept.clear()
            _sync(device)
            started = time.perf_counter()
            for batch in batches:
                loaded.model(input_ids=batch.input_ids, use_cache=False)
            _sync(device)
            seconds = time.perf_counter() - started
    finally:
        for handle in handles:
            handle.remove()
    held = sum(t.numel() * 4 for t in kept)
    kept.clear()
    return {"seconds": seconds, "story_tokens": alignment.n_tokens, "host_bytes_held": held,
            "tok_s": alignment.n_tokens / seconds}


def gpu_row(shape: str, device: torch.device, out_dir: Path, tokenizer,
            bandwidth: dict) -> dict:
    """One Llama-3-shaped model with random bf16 weights: (a)-(d) on 8 x 1024 tokens."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                         **GPU_SHAPES[shape])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, name=f"llama3-{shape}-random",
                         kind="causal", architecture="llama",
                         provenance={"model_id": f"llama3-{shape}-random", "config": shape})
    story = story_for_tokens(tokenizer, 8 * 1024, f"bench-{shape}")
    session = repeat_runs(story.texts, 4, f"bench-{shape}-4-runs")
    settings = dict(context_tokens=0, stride_tokens=1024, batch_size=8)
    bare = time_bare(loaded, story, **settings)
    brainalign = time_brainalign(loaded, story, out_dir=out_dir / shape, **settings)
    naive = time_naive(loaded, story, **settings)
    bare_session = time_bare(loaded, session, **settings)
    tr = time_brainalign(loaded, session, out_dir=out_dir / shape, to_tr=True, **settings)
    tr_memory = time_memory(loaded, session, to_tr=True, **settings)
    del model, loaded
    torch.cuda.empty_cache()
    word_bound = bound_tok_s(bare["tok_s"], brainalign["bytes_per_token"], **bandwidth)
    tr_bound = bound_tok_s(bare_session["tok_s"], tr["bytes_per_token"], **bandwidth)
    tr_memory_bound = bound_tok_s(bare_session["tok_s"], tr_memory["bytes_per_token"],
                                  bandwidth["d2h"], float("inf"))
    return {"model": f"Llama-3-{shape.upper()}-shaped, random bf16 weights", "shape": shape,
            "n_layers": config.num_hidden_layers, "windows": "8 x 1024 tokens",
            "tr_story": "4 runs of the word rows' story",
            "bare": bare, "brainalign": brainalign, "naive": naive,
            "bare_session": bare_session, "tr": tr, "tr_memory": tr_memory,
            "word_bound_tok_s": word_bound, "tr_bound_tok_s": tr_bound,
            "tr_memory_bound_tok_s": tr_memory_bound,
            "ratio": brainalign["tok_s"] / bare["tok_s"],
            "ratio_word_vs_bound": brainalign["tok_s"] / word_bound,
            "ratio_tr": tr_memory["tok_s"] / bare_session["tok_s"],
            "ratio_tr_vs_bound": tr_memory["tok_s"] / tr_memory_bound,
            "ratio_tr_disk": tr["tok_s"] / bare_session["tok_s"],
            "ratio_tr_disk_vs_bound": tr["tok_s"] / tr_bound}


def gpu_tokenizer(folder: Path | None):
    """The GPU rows' tokenizer: SmolLM2's (ids < 49,152 fit Llama-3's 128k vocabulary).

    ``folder`` holds SmolLM2's saved ``tokenizer.json`` (``tokenizer.save_pretrained``), for
    GPU machines that lack the registry's model package; without it the registry's SmolLM2
    is loaded.
    """
    if folder is None:
        return load_model(DEFAULT_CAUSAL_MODEL, device="cpu").tokenizer
    from transformers import PreTrainedTokenizerFast

    # the tokenizer.json alone: readable by any transformers release with fast tokenizers
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                   pad_token="<|im_end|>")


def cpu_row(loaded, out_dir: Path, repeats: int) -> dict:
    """SmolLM2-135M on the bundled story: (a)-(d), best of ``repeats``."""
    story = bundled_story()
    settings = dict(context_tokens=512, stride_tokens=512, batch_size=4)
    bare, brainalign, tr, tr_memory = [], [], [], []
    for _ in range(repeats):  # alternate, so load on a shared machine hits all alike
        bare.append(time_bare(loaded, story, **settings))
        brainalign.append(time_brainalign(loaded, story, out_dir=out_dir / "cpu", **settings))
        tr.append(time_brainalign(loaded, story, out_dir=out_dir / "cpu", to_tr=True,
                                  dtype="float16", **settings))
        tr_memory.append(time_memory(loaded, story, to_tr=True, dtype="float16", **settings))
    bare_best, brainalign_best, tr_best, tr_memory_best = (
        max(rows, key=lambda r: r["tok_s"]) for rows in (bare, brainalign, tr, tr_memory))
    naive = time_naive(loaded, story, **settings)
    return {"model": f"{DEFAULT_CAUSAL_MODEL} (SmolLM2-135M-Instruct, Q4_1 dequantised to float32)",
            "story": story.name,
            "settings": settings, "threads": torch.get_num_threads(),
            "bare": bare_best, "brainalign": brainalign_best, "tr": tr_best,
            "tr_memory": tr_memory_best, "naive": naive,
            "all_bare_tok_s": [r["tok_s"] for r in bare],
            "all_brainalign_tok_s": [r["tok_s"] for r in brainalign],
            "all_tr_tok_s": [r["tok_s"] for r in tr],
            "all_tr_memory_tok_s": [r["tok_s"] for r in tr_memory],
            "ratio": brainalign_best["tok_s"] / bare_best["tok_s"],
            "ratio_tr": tr_best["tok_s"] / bare_best["tok_s"],
            "ratio_tr_memory": tr_memory_best["tok_s"] / bare_best["tok_s"]}


def repeat_runs(words: list[str], n_runs: int, name: str) -> Story:
    """``n_runs`` runs, each ``words`` at 0.3 s per word, with a 2 s scan covering each."""
    run = repeat_story(words, len(words), name)
    story = Story(name, tuple(Word(w.text, w.onset_s, w.offset_s, r)
                              for r in range(n_runs) for w in run.words))
    return story.with_scan(2.0, list(run.n_volumes) * n_runs, first_volume_s=0.0)


def memory_rows(loaded, out_dir: Path, factors=(1, 2), **options) -> list[dict]:
    """Peak host memory of record_story (all layers of mlp.inner) at two story lengths.

    One window per batch, so that both lengths run several batches and cycle through the
    host buffers (a story that fits in one batch touches only some of them). Word rows:
    one run, ``factor`` times the bundled story's words. TR rows (``to_tr``): ``factor``
    runs of the bundled story's length, since the recorder holds the TR rows of the run
    being read (two at a run boundary).
    """
    words = bundled_story().texts
    rows = []
    for factor in factors:
        story = (repeat_runs(words, factor, f"memory-runs-x{factor}") if options.get("to_tr")
                 else repeat_story(words, factor * len(words), f"memory-x{factor}"))
        growth, seconds = peak_rss_growth(lambda: record_story(
            loaded, story, ["mlp.inner"], out_dir / "memory", context_tokens=512,
            stride_tokens=512, batch_size=1, overwrite=True, progress=False, **options))
        n_neurons = sum(s.width for s in resolve_sites(loaded.model, ["mlp.inner"]))
        rows.append({"n_words": len(story.words), "recorded_bytes": len(story.words) * n_neurons * 4,
                     "peak_rss_growth_bytes": growth, "seconds": seconds, **options})
    return rows


def storage_summary(result: dict, summary: dict, device: torch.device, folder: Path,
                    bandwidth: dict) -> None:
    """Measure :func:`storage_row` into ``result`` and its figures into ``summary``."""
    row = storage_row(device, folder, bandwidth)
    result["rows"]["storage"] = row
    for way in ("disk", "disk_serial", "disk_streamed"):
        if way in bandwidth:
            summary[f"{way}_gb_s"] = bandwidth[way] / 1e9
    summary["storage_gb_s"] = row["bytes_per_s"] / 1e9
    summary["storage_vs_disk"] = row["ratio_vs_disk"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="a folder holding SmolLM2's tokenizer.json, for GPU machines "
                             "without the registry's model package (default: the registry's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    summary = {"device": None, "ratio_8b_tr": None, "ratio_1b_tr": None,
               "ratio_8b_word_vs_bound": None, "ratio_cpu": None, "ratio_8b": None,
               "ratio_1b": None, "naive_tok_s_8b": None, "bare_tok_s_8b": None,
               "brainalign_tok_s_8b": None}
    result: dict = {"summary": summary, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="brainalign-bench-") as scratch:
        scratch = Path(scratch)
        if device.type == "cuda":
            summary["device"] = torch.cuda.get_device_name(device)
            tokenizer = gpu_tokenizer(args.tokenizer)
            bandwidth = {"d2h": device_to_host_bandwidth(device),
                         **disk_write_bandwidth(scratch)}
            result["bandwidth_bytes_per_s"] = bandwidth
            summary["d2h_gb_s"] = bandwidth["d2h"] / 1e9
            storage_summary(result, summary, device, scratch, bandwidth)
            for shape in ("8b", "1b"):
                row = gpu_row(shape, device, scratch, tokenizer,
                              {"d2h": bandwidth["d2h"], "disk": bandwidth["disk"]})
                result["rows"][shape] = row
                summary[f"ratio_{shape}"] = row["ratio"]
                summary[f"ratio_{shape}_tr"] = row["ratio_tr"]
                summary[f"ratio_{shape}_tr_vs_bound"] = row["ratio_tr_vs_bound"]
                summary[f"ratio_{shape}_tr_disk"] = row["ratio_tr_disk"]
                summary[f"ratio_{shape}_tr_disk_vs_bound"] = row["ratio_tr_disk_vs_bound"]
                summary[f"ratio_{shape}_word_vs_bound"] = row["ratio_word_vs_bound"]
                summary[f"bytes_per_token_{shape}"] = {
                    "word": row["brainalign"]["bytes_per_token"],
                    "tr": row["tr"]["bytes_per_token"]}
            summary["ratio_tr_means"] = ("TR rows held in host memory (record_timecourses); "
                                         "ratio_*_tr_disk: written to disk (record_story)")
            summary["tr_tok_s_8b"] = result["rows"]["8b"]["tr_memory"]["tok_s"]
            summary["naive_tok_s_8b"] = result["rows"]["8b"]["naive"]["tok_s"]
            summary["bare_tok_s_8b"] = result["rows"]["8b"]["bare"]["tok_s"]
            summary["brainalign_tok_s_8b"] = result["rows"]["8b"]["brainalign"]["tok_s"]
            summary["reason"] = "ratio_cpu not measured: run with --device cpu"
        else:
            summary["device"] = f"CPU ({platform.processor() or platform.machine()}, " \
                                f"{os.cpu_count()} cores)"
            bandwidth = disk_write_bandwidth(scratch)
            result["bandwidth_bytes_per_s"] = bandwidth
            storage_summary(result, summary, device, scratch, bandwidth)
            loaded = load_model(DEFAULT_CAUSAL_MODEL, device="cpu")
            # host memory first, before the naive peer fills the allocator's free lists
            record_story(loaded, Story("warm-up", bundled_story().words[:64]), ["mlp.inner"],
                         scratch / "warm-up", overwrite=True, progress=False)
            result["memory"] = memory_rows(loaded, scratch)
            result["memory_tr"] = memory_rows(loaded, scratch, factors=(4, 16), to_tr=True,
                                              dtype="float16")
            row = cpu_row(loaded, scratch, args.repeats)
            result["rows"]["cpu"] = row
            summary["ratio_cpu"] = row["ratio_tr"]
            summary["ratio_cpu_word"] = row["ratio"]
            summary["ratio_cpu_tr_memory"] = row["ratio_tr_memory"]
            summary["bare_tok_s_cpu"] = row["bare"]["tok_s"]
            summary["brainalign_tok_s_cpu"] = row["brainalign"]["tok_s"]
            summary["tr_tok_s_cpu"] = row["tr"]["tok_s"]
            summary["naive_tok_s_cpu"] = row["naive"]["tok_s"]
            for key in ("memory", "memory_tr"):
                summary[f"peak_rss_growth_mb{key[6:]}"] = {
                    r["n_words"]: round(r["peak_rss_growth_bytes"] / 2**20, 1)
                    for r in result[key]}
            summary["reason"] = ("GPU rows (8B, 1B shapes) not measured: no CUDA device on "
                                 "this machine; run with --device cuda")
    result["provenance"] = provenance_block(benchmark="record", device=args.device,
                                            torch_threads=torch.get_num_threads(),
                                            platform=platform.platform())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
