"""Images: a base built from Debian packages, then env (dependencies) and instance (repo at a commit) layers.

Tags carry a hash of the recipe that made them, as SWE-bench's sweb.base/env/eval images do, so a changed
recipe rebuilds and an unchanged one is a cache hit.
"""

from envfarm.images.recipe import ImageRecipe
from envfarm.images.build import ensure_image, image_exists, layer_bytes

__all__ = ["ImageRecipe", "ensure_image", "image_exists", "layer_bytes"]
