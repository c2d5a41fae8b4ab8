#!/usr/bin/env bash
# Every GPU figure of brainalign in one command (`make bench-gpu`), on a bare CUDA machine
# with torch and transformers: the recording (record.py), encoding (encode.py) and pattern
# (patterns.py) benchmarks' GPU rows, each under its own time limit so that one slow row
# does not cost the others. CPU rows are measured on the CPU machine by the same scripts.
#
#   BENCH_GPU_OUT    folder for the JSON files (default benchmarks/results/gpu)
#   BENCH_TOKENIZER  a saved tokenizer folder for record.py's GPU rows, for machines
#                    without the registry's SmolLM2 package (see record.py --tokenizer)
#   BENCH_GPU_ROWS   the benchmarks to run (default "record encode patterns"), to
#                    re-measure one row after a change without the others
set -u
out_dir=${BENCH_GPU_OUT:-benchmarks/results/gpu}
python=${PYTHON:-python3}
"$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
'make bench-gpu: torch sees no CUDA device; the GPU rows need one')" || exit 1
mkdir -p "$out_dir"
failed=()
rows=" ${BENCH_GPU_ROWS:-record encode patterns} "

step() {  # step NAME LIMIT_S COMMAND...: run one benchmark, report its wall time
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    [[ $rows == *" $name "* ]] || return 0
    echo "== $name (limit ${limit} s)"
    if ! timeout "$limit" "$@"; then
        echo "== $name did not finish (failed, or ran past ${limit} s)"
        failed+=("$name")
    fi
    echo "== $name: $((SECONDS - start)) s"
}

step record 240 "$python" benchmarks/record.py --device cuda \
    ${BENCH_TOKENIZER:+--tokenizer "$BENCH_TOKENIZER"} --out "$out_dir/record.json"
step encode 150 "$python" benchmarks/encode.py --gpu-only --repeats 2 --out "$out_dir/encode.json"
step patterns 150 "$python" benchmarks/patterns.py --gpu-only --gpu-sklearn-neurons 5000 \
    --threads "$(nproc)" --out "$out_dir/patterns.json"
if ((${#failed[@]})); then
    echo "bench-gpu: rows not measured: ${failed[*]}"
    exit 1
fi
