"""genlab's studies: every comparison is an Optuna study in a database, run by any number of workers
(``python study.py run|table|status``, the command line over this package).

A study file (``configs/studies/*.yaml``) names experiment configs, seeds and, optionally, values of
config keys (``grid: {model.init_args.code_size: [2, 8, 32]}``): a *grid*, each point one trial,
enqueued once when the study is created. With a ``search:`` section it
is a *search* instead: each trial samples the config keys of its space (Optuna sampler and pruner,
a trial budget) and the objective is read from the run's ``final_metrics.json``.

A trial is one ``python train.py fit --config CONFIG --seed_everything SEED`` process, logging to
``OUT/<config>/seed_<seed>/`` (a search's trials: ``OUT/<config>/<params hash>/seed_<seed>/``): its
CSV metrics, checkpoints, figures and an offline W&B run grouped by study; its console output goes
to ``seed_<seed>.log`` beside the folder. Its metrics go on
the trial (user attribute ``metrics``), so the table and the dashboard read the database, not the
folders. The database is any SQLAlchemy URL (default: ``sqlite:///runs/studies.db``, nothing to
start); ``optuna-dashboard sqlite:///runs/studies.db`` shows it live.

Faults: a worker records a heartbeat for its trial; a trial whose worker died (SIGKILL, a lost
machine) is failed after ``--grace`` seconds without one and re-queued by the next worker that looks.
A run that fails is recorded as failed with its one-line reason and the study goes on; Ctrl-C
(once or more) stops the run (it saves ``last.ckpt``) and re-queues its trial, which resumes from
there. A run folder that already holds ``final_metrics.json`` is recorded without training again;
a study's folder holds one study's runs (``owner.json``). The exit code is 0 only if every trial the
worker ran completed (or was pruned). A database that cannot be used (unreachable, damaged, locked
too long, a bad URL), a study file that is not valid (YAML, each key's type) or changed since its
study began, an option out of range, an ``out:`` that cannot be written or holds another study's
runs: each stops the command with one line, ``study: error: ...``, and exit code 2, before anything
is written.

One module per job: ``study_file`` (what a study file may hold, its search space and objective; the
one module of the package that ``callbacks/`` may import, so it imports only ``core/`` and third-party
packages), ``storage`` (the database and the study's folder), ``queue`` (the trials a worker claims,
the worker loop), ``trial`` (one trial's ``train.py`` process), ``report`` (``table`` and ``status``).
A run's metrics files are read through ``cli.run_metrics``, where ``train.py`` writes them.
"""
