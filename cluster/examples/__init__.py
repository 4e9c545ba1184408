"""Entry points of the example pipelines, ``python -m cluster.examples.<name>``: a config of ``configs/`` run as a
Ray job. The configs themselves, loaded as Python (:mod:`pipelines.examples`), stay in ``pipelines/``."""
