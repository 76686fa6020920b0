# genlab: `make train` trains the default experiment, `make test` runs the test suite.
# Both create .venv and install requirements.txt on first use (a few minutes), then start at once.

VENV        ?= .venv
PYTHON      := $(VENV)/bin/python
INSTALLED   := $(VENV)/.installed
DATA_DIR    ?= data
SHARED_DATA ?= ../shared/data
CONFIG      ?= configs/gan_mnist.yaml
ARGS        ?=

.PHONY: setup data train test benchmark wgan-table wgan-100k ae-code-sizes ae-denoising vae-run vae-vs-gan cifar10-study optimizer-study fashion-table cgan-run mnist-quality bf16-parity minimax clean-runs

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

# docs/benchmarks.md: the MLP GAN against the machine and a plain loop (ARGS), then the 2-D WGAN against its plain loop
# (WGAN_ARGS), then the CIFAR-10 LeNet at batch 4 and 16 against the tutorial's loop (CLASSIFIER_ARGS), then the
# optimizer study as one population against its runs one after another (POPULATION_ARGS).
benchmark: setup data
	$(PYTHON) benchmarks/gan_throughput.py $(ARGS)
	$(PYTHON) benchmarks/wgan_throughput.py $(WGAN_ARGS)
	$(PYTHON) benchmarks/classifier_throughput.py $(CLASSIFIER_ARGS)
	$(PYTHON) benchmarks/population_throughput.py $(POPULATION_ARGS)

# docs/wgan_mixtures.md: every Lipschitz strategy x {ring of 8, grid of 25}, 3 seeds, 2 runs at a time.
WGAN_STRATEGIES := spectral_norm spectral_norm_torch gradient_penalty weight_clipping none deep_spectral_norm deep_gradient_penalty
WGAN_METRICS    := modes high_quality:% reverse_kl mmd2 sliced_w1 wall_seconds
wgan-table: setup
	for data in ring8 grid25; do \
	  $(PYTHON) benchmarks/sweep.py --configs $(foreach s,$(WGAN_STRATEGIES),configs/wgan_$${data}_$(s).yaml) \
	    --seeds 0 1 2 --jobs 2 --metrics $(WGAN_METRICS) --figure 'landscape/iteration_*.png' --out runs/sweeps/wgan_$$data $(ARGS) || exit 1; \
	done

# docs/wgan_mixtures.md: the deep spectral-norm and gradient-penalty critics at 100,000 critic iterations, ring and grid, SEEDS.
WGAN_LONG := deep_spectral_norm deep_gradient_penalty
wgan-100k: setup
	for data in ring8 grid25; do \
	  $(PYTHON) benchmarks/sweep.py --configs $(foreach s,$(WGAN_LONG),configs/wgan_$${data}_$(s).yaml) \
	    --seeds $(SEEDS) --jobs 2 --metrics $(WGAN_METRICS) --figure 'landscape/iteration_*.png' --out runs/sweeps/wgan_100k_$$data \
	    -- --trainer.max_steps 120000 $(ARGS) || exit 1; \
	done

# Sample quality of image GANs, measured with the domain classifiers (callbacks.SampleQuality).
QUALITY_METRICS := fid kid inception_score classes_covered class_kl wall_seconds
EPOCHS          ?= 10
SEEDS           ?= 0 1 2

# docs/optimizers.md: SGD, heavy ball, RMSProp, AMSGrad, Adam x 3 rates x 3 seeds, 15 epochs, all 45 runs at once in one process.
optimizer-study: setup data
	$(PYTHON) train.py fit --config configs/optimizer_study.yaml $(ARGS)

# docs/gan_fashion_mnist.md: the four Fashion-MNIST variants x SEEDS, EPOCHS epochs each, 2 runs at a time.
fashion-table: setup data
	$(PYTHON) benchmarks/sweep.py --configs $(foreach v,gan_fashion_mnist gan_fashion_mnist_fast_g gan_fashion_mnist_unnormalised gan_fashion_mnist_large_batch,configs/$(v).yaml) \
	  --seeds $(SEEDS) --jobs 2 --metrics $(QUALITY_METRICS) --figure 'samples/*.png' --out runs/sweeps/gan_fashion_mnist -- --trainer.max_epochs $(EPOCHS) $(ARGS)

# docs/cgan_fashion_mnist.md: the conditional GAN, EPOCHS epochs (20 in the docs).
cgan-run: setup data
	$(PYTHON) benchmarks/sweep.py --configs configs/cgan_fashion_mnist.yaml --seeds 0 --threads 2 \
	  --metrics conditional_accuracy:% $(QUALITY_METRICS) --figure 'samples/*.png' --out runs/sweeps/cgan_fashion_mnist -- --trainer.max_epochs $(EPOCHS) $(ARGS)

# docs/gan_mnist.md: sample quality and class coverage of the MNIST experiments (a), (b), (c) x SEEDS.
mnist-quality: setup data
	$(PYTHON) benchmarks/sweep.py --configs configs/gan_mnist.yaml configs/gan_mnist_saturating.yaml configs/gan_mnist_k5.yaml \
	  --seeds $(SEEDS) --jobs 2 --metrics $(QUALITY_METRICS) --figure 'samples/*.png' --out runs/sweeps/gan_mnist -- --trainer.max_epochs $(EPOCHS) $(ARGS)

# docs/benchmarks.md: (a) in fp32 and in bf16-mixed x SEEDS, EPOCHS epochs each, 2 runs at a time: speed and quality.
bf16-parity: setup data
	$(PYTHON) benchmarks/sweep.py --configs configs/gan_mnist.yaml configs/gan_mnist_bf16.yaml \
	  --seeds $(SEEDS) --jobs 2 --metrics $(QUALITY_METRICS) --figure 'samples/*.png' --out runs/sweeps/bf16_parity -- --trainer.max_epochs $(EPOCHS) $(ARGS)

# docs/autoencoders.md: reconstruction error against code size, nonlinear and linear autoencoders beside PCA (AE_EPOCHS epochs).
AE_EPOCHS       ?= 20
AE_METRICS      := test_mse test_mse_sigma_0.1 test_mse_sigma_0.3 test_mse_sigma_0.5 latent_knn_accuracy:% wall_seconds
ae-code-sizes: setup data
	$(PYTHON) benchmarks/pca_baseline.py --ranks 2 8 32 128
	for size in 2 8 32 128; do \
	  $(PYTHON) benchmarks/sweep.py --configs configs/ae_mnist.yaml configs/ae_mnist_linear.yaml --seeds 0 --jobs 2 --metrics $(AE_METRICS) \
	    --out runs/sweeps/ae_code_$$size -- --model.init_args.code_size $$size --trainer.max_epochs $(AE_EPOCHS) $(ARGS) || exit 1; \
	done

# docs/autoencoders.md: plain vs denoising autoencoder (32-number codes), test error with inputs corrupted at sigma 0, 0.1, 0.3, 0.5.
ae-denoising: setup data
	$(PYTHON) benchmarks/sweep.py --configs configs/ae_mnist.yaml configs/dae_mnist.yaml --seeds 0 --jobs 2 --metrics $(AE_METRICS) \
	  --figure 'reconstructions/epoch_*.png' --out runs/sweeps/ae_denoising -- --model.init_args.code_size 32 --trainer.max_epochs $(AE_EPOCHS) $(ARGS)

# docs/autoencoders.md: the VAEs (50 and 2 latents), VAE_EPOCHS epochs, then the 50-latent one's test NLL with k = 5,000.
VAE_EPOCHS      ?= 100
VAE_METRICS     := test_nll test_elbo fid kid inception_score classes_covered class_kl latent_knn_accuracy:% wall_seconds
vae-run: setup data
	$(PYTHON) benchmarks/sweep.py --configs configs/vae_mnist.yaml configs/vae_mnist_2d.yaml --seeds 0 --jobs 2 --metrics $(VAE_METRICS) \
	  --curves test/nll quality/fid --out runs/sweeps/vae -- --trainer.max_epochs $(VAE_EPOCHS) $(ARGS)
	$(PYTHON) train.py test --config configs/vae_mnist.yaml --ckpt_path runs/sweeps/vae/vae_mnist/seed_0/checkpoints/last.ckpt \
	  --model.init_args.test_samples 5000 --trainer.logger false

# docs/autoencoders.md, VAE vs GAN: vae_mnist and gan_mnist (a) with the same wall-time budget per run (EQUAL_TIME, DD:HH:MM:SS,
# of training, monitoring included), SEEDS each, two single-threaded runs at a time: sample quality where time ran out.
EQUAL_TIME      ?= 00:00:10:00
vae-vs-gan: setup data
	$(PYTHON) benchmarks/sweep.py --configs configs/vae_mnist.yaml configs/gan_mnist.yaml --seeds $(SEEDS) --jobs 2 \
	  --metrics epoch $(QUALITY_METRICS) --curves quality/fid quality/inception_score --out runs/sweeps/vae_vs_gan \
	  -- --trainer.max_time $(EQUAL_TIME) --trainer.max_epochs -1 $(ARGS)

# docs/cifar10_lenet.md: the tutorial's LeNet at batch 4 and 16 x SEEDS, 20 epochs each, test accuracy after 5 and 20 epochs
# (with a constant learning rate a 5-epoch run is the first 5 epochs of the 20-epoch one); then the batch-16 cell against
# augmentation, batch norm, dropout and a wider network (its results are reused: finished runs are not run again).
CIFAR_METRICS := test_acc_epoch_5:% test_acc_epoch_20:% wall_seconds
cifar10-study: setup data
	$(PYTHON) benchmarks/sweep.py --configs configs/cifar10_lenet.yaml configs/cifar10_lenet_batch16.yaml --seeds $(SEEDS) --jobs 2 \
	  --metrics $(CIFAR_METRICS) --curves train/running_loss:points test/acc --figure test_confusion.png --out runs/sweeps/cifar10_lenet $(ARGS)
	$(PYTHON) benchmarks/sweep.py --configs configs/cifar10_lenet_batch16.yaml $(foreach v,augmented batch_norm dropout wide,configs/cifar10_lenet_$(v).yaml) \
	  --seeds $(SEEDS) --jobs 2 --metrics $(CIFAR_METRICS) --curves test/acc --out runs/sweeps/cifar10_lenet $(ARGS)

minimax: setup
	$(PYTHON) -m lightning_modules.components.minimax --gamma 0.1 --steps 300 --out docs/figures/minimax.png $(ARGS)

clean-runs:
	rm -rf runs
