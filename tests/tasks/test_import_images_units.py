"""Environment sources for imported tasks, the parts that need no engine: registry names, recipe steps,
the Kubernetes backend's image choice (the engine paths are in test_import_environments.py)."""

from __future__ import annotations

import pytest

from envfarm.errors import EnvfarmError
from envfarm.task import InstallConfig, TaskSpec
from envfarm.tasks.harness_eval import TaskImages
from envfarm.tasks.importers.images import EnvSources, has_recipe, recipe_steps, registry_ref


def test_registry_ref_replaces_the_rows_own_host_and_keeps_its_path() -> None:
    assert registry_ref("swebench/sweb.eval.x86_64.a_1776_b-1:latest", "") == "swebench/sweb.eval.x86_64.a_1776_b-1:latest"
    assert registry_ref("swebench/sweb.eval.x86_64.a_1776_b-1:latest", "http://127.0.0.1:5714") == "127.0.0.1:5714/swebench/sweb.eval.x86_64.a_1776_b-1:latest"
    assert registry_ref("ghcr.io/org/img:1", "mirror.example.com/cache") == "mirror.example.com/cache/org/img:1"
    assert registry_ref("localhost:5000/img", "https://reg.example.com") == "reg.example.com/img"


def _task(**recipe: object) -> TaskSpec:
    return TaskSpec(instance_id="a__b-1", repo="a/b", install=InstallConfig(**recipe), extra={"requirements": "pytest==8.0\n"})


def test_recipe_steps_follow_the_harness_order() -> None:
    steps, files = recipe_steps(_task(pre_install=["apt-get install -y x"], packages="requirements.txt", pip_packages=["pytest", "a b"],
                                      install=["python -m pip install -e ."]), "python3 -m venv /opt/venv")
    assert steps == ["python3 -m venv /opt/venv", "apt-get install -y x", "python -m pip install -r /tmp/envfarm-requirements.txt",
                     "python -m pip install pytest 'a b'", "python -m pip install -e ."]
    assert files == [("/tmp/envfarm-requirements.txt", b"pytest==8.0\n")]
    assert has_recipe(_task(install=["make"])) and not has_recipe(_task())


def test_a_conda_recipe_is_refused_with_the_fix() -> None:
    with pytest.raises(EnvfarmError, match="conda environment") as err:
        recipe_steps(_task(packages="environment.yml"), "v")
    assert "pre-built image" in err.value.fix


def test_on_kubernetes_the_cluster_pulls_the_rows_image_from_the_users_registry() -> None:
    task = TaskSpec(instance_id="a__b-1", image="swebench/x:latest")
    images = TaskImages(EnvSources(registry="reg.example.com/mirror"), backend="kubernetes")
    assert images.prepare(task).image == "reg.example.com/mirror/swebench/x:latest"
    built = task.model_copy(update={"image": "envfarm/instance.a__b-1:abc", "extra": {"environment": {"source": "dataset-recipe"}}})
    assert images.prepare(built).image == "envfarm/instance.a__b-1:abc"
