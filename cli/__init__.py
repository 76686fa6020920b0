"""What ``train.py`` decides for every run, each mechanism in one module: where a run's files go and
who may write there (``run_folder``), its metrics files, which the studies read (``run_metrics``), how
checkpoints reach the disk (``checkpoint_io``); and the export command, the one writer of ``pretrained/``
(``python -m cli.export``)."""
