"""KFP v2 lightweight components: thin typed wrappers, each calling one ``retention`` function.

A lightweight component ships only its function body to the task, so every import lives inside the
body. The image a component runs in comes from the profile (``pipeline.base_image`` or, for GPU
steps, ``pipeline.gpu_image``); the image must contain this project, which is why kfp is not
pip-installed per task (``install_kfp_package=False``): that saves ~0.5 s per task locally.
"""

from __future__ import annotations

from collections.abc import Callable

from kfp import dsl

from retention.config import Profile


def build(func: Callable, profile: Profile, gpu: bool = False):
    image = profile.pipeline.gpu_image if gpu else profile.pipeline.base_image
    return dsl.component(func, base_image=image, install_kfp_package=False, packages_to_install=[])
