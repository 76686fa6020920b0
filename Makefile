# genlab: `make train` trains the default experiment, `make test` runs the test suite.
# Both create .venv and install requirements.txt on first use (a few minutes), then start at once.

VENV        ?= .venv
PYTHON      := $(VENV)/bin/python
INSTALLED   := $(VENV)/.installed
DATA_DIR    ?= data
SHARED_DATA ?= ../shared/data
CONFIG      ?= configs/gan_mnist.yaml
ARGS        ?=

.PHONY: setup data train test benchmark clean-runs

setup: $(INSTALLED)

# Re-installs only when requirements.txt changes.
$(INSTALLED): requirements.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# Unpacks the offline copies of the datasets, if this machine has them, into $(DATA_DIR)/.
# Without them, the datamodules download on first use (needs network).
data:
	@mkdir -p $(DATA_DIR)
	@for name in MNIST FashionMNIST CIFAR-10-images; do \
	  archive=$$(ls $(SHARED_DATA)/$$name*.tar.gz 2>/dev/null | head -n 1); \
	  if [ ! -d $(DATA_DIR)/$$name ] && [ -n "$$archive" ]; then \
	    echo "unpacking $$archive into $(DATA_DIR)/"; tar xzf $$archive -C $(DATA_DIR); \
	  fi; \
	done

train: setup data
	$(PYTHON) train.py fit --config $(CONFIG) $(ARGS)

test: setup data
	$(PYTHON) -m pytest $(ARGS)

benchmark: setup data
	$(PYTHON) benchmarks/gan_throughput.py $(ARGS)

clean-runs:
	rm -rf runs
