"""KFP v2 lightweight components: thin typed wrappers, each calling one ``retention`` function.

A lightweight component ships only its function body to the task, so every import lives inside the
body. The image a component runs in comes from the profile (``pipeline.base_image`` or, for GPU
steps, ``pipeline.gpu_image``); the image must contain this project, which is why kfp is not
pip-installed per task (``install_kfp_package=False``): that saves ~0.5 s per task locally.

Component bodies import ``components.kfp_results`` inside the task, where kfp runs in its lean
runtime mode; so this package's ``__init__`` imports nothing, and what builds components for the
DAG (``components.factory``) is imported only at compile time.
"""
