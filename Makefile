# The two commands of the README (`make demo`, `make test`) set up everything they need:
# a virtual environment in .venv with photonflow installed in editable mode.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.photonflow-installed
DETECTOR ?= simulator
# `make demo DETECTOR=eiger4m` runs config/eiger4m.yaml; the default simulator, config/demo.yaml.
DEMO_CONFIG = $(if $(filter simulator,$(DETECTOR)),config/demo.yaml,config/$(DETECTOR).yaml)
FRAMES ?=
EXPOSURE ?=
PERIOD ?=
STEP ?=
# `make up INSTANCE=b`: a second suite on this host, its servers run as Executable/b, its folder var/b
INSTANCE ?=
SUITE_VAR = $(if $(INSTANCE),PHOTONFLOW_VAR=$${PHOTONFLOW_VAR:-var/$(INSTANCE)})

.PHONY: demo test bench bench-pipeline bench-soak bench-chain bench-run-table bench-sardana bench-scale bench-web up down panel beamline-panel runs venv clean

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[gui,test,sardana,tomo]" "setuptools<81"
	# nabu's CPU filter (pyvkfft) is source only on PyPI: built where the OpenCL headers are (.ci/run installs them)
	if [ -f /usr/include/CL/cl.h ]; then VKFFT_BACKEND=opencl $(BIN)/python -m pip install --quiet pyvkfft \
	|| echo "pyvkfft did not build: nabu's test will skip"; \
	else echo "no OpenCL headers (apt-get install opencl-headers ocl-icd-opencl-dev): nabu's test will skip"; fi
	touch $(INSTALLED)

venv: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/photonflow demo --config $(DEMO_CONFIG) $(if $(FRAMES),--frames $(FRAMES)) \
		$(if $(EXPOSURE),--exposure $(EXPOSURE)) $(if $(PERIOD),--period $(PERIOD)) \
		$(if $(STEP),--step $(STEP)) $(if $(RECORDERS),--recorders $(RECORDERS)) $(if $(filter 1 yes true,$(ANALYSIS)),--analysis)

test: $(INSTALLED)
	$(BIN)/ruff check .
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest tests

bench: $(INSTALLED)
	$(BIN)/python benchmarks/recorder_bench.py
	$(BIN)/python benchmarks/scan_bench.py

bench-pipeline: $(INSTALLED)
	$(BIN)/python benchmarks/pipeline_bench.py

bench-soak: $(INSTALLED)
	$(BIN)/python benchmarks/soak.py

bench-chain: $(INSTALLED)
	$(BIN)/python benchmarks/chain_soak.py

bench-scale: $(INSTALLED)
	$(BIN)/python benchmarks/scale_bench.py

bench-sardana: $(INSTALLED)
	$(BIN)/python benchmarks/sardana_bench.py

bench-web: $(INSTALLED)
	$(BIN)/python benchmarks/web_bench.py

bench-run-table: $(INSTALLED)
	QT_QPA_PLATFORM=offscreen $(BIN)/python benchmarks/run_table_bench.py

up: $(INSTALLED)
	$(BIN)/photonflow up --config $(DEMO_CONFIG) $(if $(SARDANA),--sardana) $(if $(STARTER),--starter) \
		$(if $(INSTANCE),--instance $(INSTANCE)) $(if $(RECORDERS),--recorders $(RECORDERS)) $(if $(filter 1 yes true,$(ANALYSIS)),--analysis)

down: $(INSTALLED)
	$(BIN)/photonflow down $(if $(INSTANCE),--instance $(INSTANCE))

# the panels of the suite `make up` started (same DETECTOR): its devices, its database
panel: $(INSTALLED)
	$(SUITE_VAR) $(BIN)/photonflow-panel --config $(DEMO_CONFIG)

beamline-panel: $(INSTALLED)
	$(SUITE_VAR) $(BIN)/photonflow-beamline --config $(DEMO_CONFIG)

# the run table of a proposal's catalogue: make runs CATALOGUE=var/data/catalogue/demo0001.sqlite
runs: $(INSTALLED)
	$(BIN)/photonflow-runs $(CATALOGUE)

clean:
	rm -rf var $(VENV)
