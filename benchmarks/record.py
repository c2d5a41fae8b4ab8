"""Benchmark: recording speed and host memory of brainalign.record against its peers.

Rows (tokens/s over the same context windows and batches):

(a) bare      the model's own forward pass through its blocks (``model.model``, no LM
              head, no hooks): the speed limit.
(b) brainalign ``record_story`` recording ``mlp.inner`` of every layer, pooled to words on
              the device and streamed to disk (alignment, hooks, pooling, copies, writes,
              checksums and manifest all included in the time).
(c) naive     a forward hook per layer that keeps ``.float().cpu()`` of every token's
              ``mlp.inner`` in a Python list (what most research code does).

On CUDA: a Llama-3-8B-shaped and a Llama-3.2-1B-shaped model built from configs with
random bf16 weights (no download), 8 windows x 1024 tokens. On CPU: SmolLM2-135M on the
bundled story. The CPU run also records host memory (peak RSS above the level before the
call) at two story lengths. Writes JSON (default ``benchmarks/results/record.json``).

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

from brainalign.models.registry import LoadedModel, load_model
from brainalign.models.sites import resolve_sites
from brainalign.provenance import provenance_block
from brainalign.record import align_words, context_policy, plan_windows, record_story
from brainalign.record.recorder import _make_batch
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
    """A story of ``n_words`` words cycling through ``words``, 0.3 s each, one run."""
    texts = [words[i % len(words)] for i in range(n_words)]
    return Story(name, tuple(Word(t, 0.3 * i, 0.3 * i + 0.25) for i, t in enumerate(texts)))


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


def time_brainalign(loaded, story, context_tokens, stride_tokens, batch_size, out_dir) -> dict:
    """(b): record_story, mlp.inner of all layers, pooled to words, streamed to disk."""
    kwargs = dict(context_tokens=context_tokens, stride_tokens=stride_tokens,
                  batch_size=batch_size, overwrite=True, progress=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    warm_up = Story(f"{story.name}-warm-up", story.words[:64])
    record_story(loaded, warm_up, ["mlp.inner"], out_dir / "warm-up", **kwargs)
    _sync(loaded.device)
    timed = Path(tempfile.mkdtemp(dir=out_dir))  # fresh: a finished recording would be skipped
    started = time.perf_counter()
    path = record_story(loaded, story, ["mlp.inner"], timed, **kwargs)
    _sync(loaded.device)
    seconds = time.perf_counter() - started
    manifest = json.loads((path / "manifest.json").read_text())
    bytes_written = sum(f.stat().st_size for f in path.rglob("*.npy"))
    shutil.rmtree(timed)
    return {"seconds": seconds, "story_tokens": manifest["n_tokens"],
            "n_words": manifest["n_words"], "n_neurons": manifest["n_neurons"],
            "bytes_written": bytes_written,
            "tok_s": manifest["n_tokens"] / seconds}


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


def gpu_row(shape: str, device: torch.device, out_dir: Path, tokenizer) -> dict:
    """One Llama-3-shaped model with random bf16 weights: (a), (b), (c) on 8 x 1024 tokens."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                         **GPU_SHAPES[shape])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, name=f"llama3-{shape}-random",
                         kind="causal", architecture="llama",
                         provenance={"model_id": f"llama3-{shape}-random", "config": shape})
    story = story_for_tokens(tokenizer, 8 * 1024, f"bench-{shape}")
    settings = dict(context_tokens=0, stride_tokens=1024, batch_size=8)
    bare = time_bare(loaded, story, **settings)
    brainalign = time_brainalign(loaded, story, out_dir=out_dir / shape, **settings)
    naive = time_naive(loaded, story, **settings)
    del model, loaded
    torch.cuda.empty_cache()
    return {"model": f"Llama-3-{shape.upper()}-shaped, random bf16 weights", "shape": shape,
            "n_layers": config.num_hidden_layers, "windows": "8 x 1024 tokens",
            "bare": bare, "brainalign": brainalign, "naive": naive,
            "ratio": brainalign["tok_s"] / bare["tok_s"]}


def gpu_tokenizer(folder: Path | None):
    """The GPU rows' tokenizer: SmolLM2's (ids < 49,152 fit Llama-3's 128k vocabulary).

    ``folder`` holds SmolLM2's saved ``tokenizer.json`` (``tokenizer.save_pretrained``), for
    GPU machines that lack the registry's model package; without it the registry's SmolLM2
    is loaded.
    """
    if folder is None:
        return load_model("smollm2-135m", device="cpu").tokenizer
    from transformers import PreTrainedTokenizerFast

    # the tokenizer.json alone: readable by any transformers release with fast tokenizers
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                   pad_token="<|im_end|>")


def cpu_row(loaded, out_dir: Path, repeats: int) -> dict:
    """SmolLM2-135M on the bundled story: (a), (b) and (c), best of ``repeats``."""
    story = bundled_story()
    settings = dict(context_tokens=512, stride_tokens=512, batch_size=4)
    bare, brainalign = [], []
    for _ in range(repeats):  # alternate, so load on a shared machine hits both alike
        bare.append(time_bare(loaded, story, **settings))
        brainalign.append(time_brainalign(loaded, story, out_dir=out_dir / "cpu", **settings))
    bare_best = max(bare, key=lambda r: r["tok_s"])
    brainalign_best = max(brainalign, key=lambda r: r["tok_s"])
    naive = time_naive(loaded, story, **settings)
    return {"model": "smollm2-135m (SmolLM2-135M-Instruct, float32)", "story": story.name,
            "settings": settings, "threads": torch.get_num_threads(),
            "bare": bare_best, "brainalign": brainalign_best, "naive": naive,
            "all_bare_tok_s": [r["tok_s"] for r in bare],
            "all_brainalign_tok_s": [r["tok_s"] for r in brainalign],
            "ratio": brainalign_best["tok_s"] / bare_best["tok_s"]}


def memory_rows(loaded, out_dir: Path, factors=(1, 2)) -> list[dict]:
    """Peak host memory of record_story (all layers of mlp.inner) at two story lengths.

    One window per batch, so that both lengths run several batches and fill both host
    buffer sets (a story that fits in one batch touches only one of them).
    """
    words = bundled_story().texts
    rows = []
    for factor in factors:
        story = repeat_story(words, factor * len(words), f"memory-x{factor}")
        growth, seconds = peak_rss_growth(lambda: record_story(
            loaded, story, ["mlp.inner"], out_dir / "memory", context_tokens=512,
            stride_tokens=512, batch_size=1, overwrite=True, progress=False))
        n_neurons = sum(s.width for s in resolve_sites(loaded.model, ["mlp.inner"]))
        rows.append({"n_words": len(story.words), "recorded_bytes": len(story.words) * n_neurons * 4,
                     "peak_rss_growth_bytes": growth, "seconds": seconds})
    return rows


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
    summary = {"device": None, "ratio_8b": None, "ratio_1b": None, "ratio_cpu": None,
               "naive_tok_s_8b": None, "bare_tok_s_8b": None, "brainalign_tok_s_8b": None}
    result: dict = {"summary": summary, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="brainalign-bench-") as scratch:
        scratch = Path(scratch)
        if device.type == "cuda":
            summary["device"] = torch.cuda.get_device_name(device)
            tokenizer = gpu_tokenizer(args.tokenizer)
            for shape in ("8b", "1b"):
                row = gpu_row(shape, device, scratch, tokenizer)
                result["rows"][shape] = row
                summary[f"ratio_{shape}"] = row["ratio"]
            summary["naive_tok_s_8b"] = result["rows"]["8b"]["naive"]["tok_s"]
            summary["bare_tok_s_8b"] = result["rows"]["8b"]["bare"]["tok_s"]
            summary["brainalign_tok_s_8b"] = result["rows"]["8b"]["brainalign"]["tok_s"]
            summary["reason"] = "ratio_cpu not measured: run with --device cpu"
        else:
            summary["device"] = f"CPU ({platform.processor() or platform.machine()}, " \
                                f"{os.cpu_count()} cores)"
            loaded = load_model("smollm2-135m", device="cpu")
            # host memory first, before the naive peer fills the allocator's free lists
            record_story(loaded, Story("warm-up", bundled_story().words[:64]), ["mlp.inner"],
                         scratch / "warm-up", overwrite=True, progress=False)
            result["memory"] = memory_rows(loaded, scratch)
            row = cpu_row(loaded, scratch, args.repeats)
            result["rows"]["cpu"] = row
            summary["ratio_cpu"] = row["ratio"]
            summary["bare_tok_s_cpu"] = row["bare"]["tok_s"]
            summary["brainalign_tok_s_cpu"] = row["brainalign"]["tok_s"]
            summary["naive_tok_s_cpu"] = row["naive"]["tok_s"]
            growth = [r["peak_rss_growth_bytes"] for r in result["memory"]]
            summary["peak_rss_growth_mb"] = {r["n_words"]: round(g / 2**20, 1)
                                             for r, g in zip(result["memory"], growth)}
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
