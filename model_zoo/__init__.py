"""The model zoo of wbc-audit: the published white-blood-cell classifier architectures
(:mod:`model_zoo.architectures`, registry in :mod:`model_zoo.registry`), the ``wbc-zoo`` trainer
(:mod:`model_zoo.train`, :mod:`model_zoo.cli`), and the sample model (:mod:`model_zoo.small_cnn`,
:mod:`model_zoo.train_sample`, ``model_zoo/pretrained/``). See ``model_zoo/README.md``."""
