# genlab: `make demo` trains a 2-minute GAN, `make train` the default experiment, `make test` runs the test suite.
# Both create .venv and install requirements.txt on first use (a few minutes), then start at once.

VENV        ?= .venv
PYTHON      := $(VENV)/bin/python
INSTALLED   := $(VENV)/.installed
DATA_DIR    ?= data
SHARED_DATA ?= ../shared/data
CONFIG      ?= configs/gan_mnist.yaml
ARGS        ?=

.PHONY: setup data demo train test test-fast benchmark device-check study wgan-table wgan-table-population wgan-spectral-regularization pacgan-table pacgan-table-long wgan-toy-table iwae-table wgan-100k wgan-search ae-code-sizes ae-denoising vae-run vae-vs-gan cifar10-study optimizer-study fashion-table cgan-run mnist-quality mnist-quality-population mnist-100 bf16-parity minimax clean-runs

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

# The quick start: 3 short epochs of the MNIST GAN, recognisable digits in about 2 minutes on 2 CPU cores (README).
demo: setup data
	$(PYTHON) train.py fit --config configs/gan_mnist_demo.yaml $(ARGS)

train: setup data
	$(PYTHON) train.py fit --config $(CONFIG) $(ARGS)

test: setup data
	$(PYTHON) -m pytest $(ARGS)

# The quick loop: the tests not marked slow (those start train.py or a script in fresh processes).
test-fast: setup data
	$(PYTHON) -m pytest -m "not slow" $(ARGS)

# docs/benchmarks.md: the MLP GAN against the machine and a plain loop (ARGS), then the 2-D WGAN against its plain loop
# (WGAN_ARGS), then the CIFAR-10 LeNet at batch 4 and 16 against the tutorial's loop (CLASSIFIER_ARGS), then the
# optimizer study as one population against its runs one after another (POPULATION_ARGS).
benchmark: setup data
	$(PYTHON) benchmarks/gan_throughput.py $(ARGS)
	$(PYTHON) benchmarks/wgan_throughput.py $(WGAN_ARGS)
	$(PYTHON) benchmarks/classifier_throughput.py $(CLASSIFIER_ARGS)
	$(PYTHON) benchmarks/population_throughput.py $(POPULATION_ARGS)

# docs/benchmarks.md, GPU check: the figures a lent GPU machine should give, within 8 minutes of a bare start
# (OUT_DIR: where its log, JSON, grids and final_metrics.json go; default $OUT, else runs/device_check).
device-check:
	bash benchmarks/device_check.sh $(OUT_DIR)

# Studies (study.py, configs/studies/): STUDY_WORKERS workers on this machine pull the study's runs from the database
# (STORAGE, default runs/studies.db); then table.md and the figures. Stopped, they resume where they were; other machines
# can join with `python study.py run STUDY --storage URL`. `make study STUDY=NAME` runs any of them.
STUDY_WORKERS ?= 2
STORAGE       ?= sqlite:///runs/studies.db
STUDY_RUN      = $(PYTHON) study.py run $(1) --workers $(STUDY_WORKERS) --storage $(STORAGE) $(ARGS) && $(PYTHON) study.py table $(1) --storage $(STORAGE)

study: setup data
	$(call STUDY_RUN,$(STUDY))

# docs/wgan_mixtures.md: every Lipschitz strategy x {ring of 8, grid of 25}, 3 seeds.
wgan-table: setup
	$(call STUDY_RUN,wgan_ring8) && $(call STUDY_RUN,wgan_grid25)

# docs/wgan_mixtures.md: the same tables with each config's seeds trained as one population (population: true).
wgan-table-population: setup
	$(call STUDY_RUN,wgan_ring8_population) && $(call STUDY_RUN,wgan_grid25_population)

# docs/wgan_mixtures.md: spectral regularisation's rows (ring and grid, one and three hidden layers, populations),
# then its weight λ 0.1 and 1 on the one-hidden-layer critics.
wgan-spectral-regularization: setup
	$(call STUDY_RUN,wgan_spectral_regularization) && $(call STUDY_RUN,wgan_spectral_regularization_weight)

# docs/wgan_mixtures.md: PacGAN's Table 1 on PacGAN's protocol (GAN, PacGAN2-4 x 3 seeds, ring and grid; CPU budget:
# 10 of 400 epochs); pacgan-table-long the grid's and the ring's rows for 40 epochs (~2 h each with 2 workers).
pacgan-table: setup
	$(call STUDY_RUN,pacgan_ring8) && $(call STUDY_RUN,pacgan_grid25)
pacgan-table-long: setup
	$(call STUDY_RUN,pacgan_grid25_long) && $(call STUDY_RUN,pacgan_ring8_long)

# docs/wgan_mixtures.md: genlab's WGAN rows on PacGAN's protocol, the WGAN-GP toy's settings (CPU budget).
wgan-toy-table: setup
	$(call STUDY_RUN,wgan_toy)

# docs/wgan_mixtures.md: the deep spectral-norm and gradient-penalty critics at 100,000 critic iterations, ring and grid.
wgan-100k: setup
	$(call STUDY_RUN,wgan_100k_ring8) && $(call STUDY_RUN,wgan_100k_grid25)

# docs/wgan_mixtures.md: TPE with pruning over the ring WGAN's penalty weight, learning rates and critic steps.
wgan-search: setup
	$(call STUDY_RUN,wgan_ring8_search)

# docs/optimizers.md: SGD, heavy ball, RMSProp, AMSGrad, Adam x 3 rates x 3 seeds, 15 epochs, all 45 runs at once in one process.
optimizer-study: setup data
	$(PYTHON) train.py fit --config configs/optimizer_study.yaml $(ARGS)

# docs/gan_fashion_mnist.md: the four Fashion-MNIST variants x 3 seeds, 10 epochs each.
fashion-table: setup data
	$(call STUDY_RUN,gan_fashion_mnist)

# docs/cgan_fashion_mnist.md: the conditional GAN, 20 epochs, one worker with 2 threads.
cgan-run: setup data
	$(PYTHON) study.py run cgan_fashion_mnist --threads 2 --storage $(STORAGE) $(ARGS) && $(PYTHON) study.py table cgan_fashion_mnist --storage $(STORAGE)

# docs/gan_mnist.md: sample quality and class coverage of the MNIST experiments (a), (b), (c) x 3 seeds, 10 epochs;
# and the three for 100 epochs (grids at epochs 1, 50, 100).
mnist-quality: setup data
	$(call STUDY_RUN,gan_mnist_quality)
mnist-quality-population: setup data
	$(MAKE) study STUDY=gan_mnist_quality_population STUDY_WORKERS=3
mnist-100: setup data
	$(call STUDY_RUN,gan_mnist_100)

# docs/benchmarks.md: (a) in fp32 and in bf16-mixed x 3 seeds, 10 epochs each: speed and quality.
bf16-parity: setup data
	$(call STUDY_RUN,bf16_parity)

# docs/autoencoders.md: reconstruction error against code size (nonlinear and linear autoencoders beside PCA), and plain vs
# denoising autoencoder.
ae-code-sizes: setup data
	$(PYTHON) benchmarks/pca_baseline.py --ranks 2 8 32 128
	$(call STUDY_RUN,ae_code_sizes)
ae-denoising: setup data
	$(call STUDY_RUN,ae_denoising)

# docs/autoencoders.md: the IWAE paper's rows (VAE, IWAE k = 5, 50) on its protocol (CPU budget: stages 1-2, then a
# separate run of each through stage 3).
iwae-table: setup data
	$(call STUDY_RUN,iwae_mnist) && $(call STUDY_RUN,iwae_mnist_stage3)

# docs/autoencoders.md: the VAEs (50 and 2 latents), 50 epochs, then the 50-latent one's test NLL with k = 5,000.
vae-run: setup data
	$(call STUDY_RUN,vae)
	$(PYTHON) train.py test --config configs/vae_mnist.yaml --ckpt_path runs/studies/vae/vae_mnist/seed_0/checkpoints/last.ckpt \
	  --model.init_args.test_samples 5000 --trainer.logger false

# docs/autoencoders.md, VAE vs GAN: vae_mnist and gan_mnist (a) with the same 10 minutes of training per run, 3 seeds.
vae-vs-gan: setup data
	$(call STUDY_RUN,vae_vs_gan)

# docs/cifar10_lenet.md: the tutorial's LeNet at batch 4 and 16, and the batch-16 cell against four changes, 3 seeds.
cifar10-study: setup data
	$(call STUDY_RUN,cifar10_lenet)

minimax: setup
	$(PYTHON) -m lightning_modules.components.minimax --gamma 0.1 --steps 300 --out docs/figures/minimax.png $(ARGS)

clean-runs:
	rm -rf runs
