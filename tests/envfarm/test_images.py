"""Layered images: content-hash tags, cache hits, build failures that carry their log, recipe files, prune."""

from __future__ import annotations

import pytest

from envfarm.errors import EnvfarmError, ImageMissing
from envfarm.images import ImageRecipe, ensure_image
from envfarm.images.build import ImageBuildError
from envfarm.images.loader import load_recipe
from envfarm.images.recipe import slug


def test_tags_follow_the_recipe_content() -> None:
    one = ImageRecipe(kind="env", name="octo/demo@1.0", parent="envfarm/base:bookworm", steps=("echo a",))
    same = ImageRecipe(kind="env", name="octo/demo@1.0", parent="envfarm/base:bookworm", steps=("echo a",))
    other = ImageRecipe(kind="env", name="octo/demo@1.0", parent="envfarm/base:bookworm", steps=("echo b",))
    assert one.tag("sha256:p") == same.tag("sha256:p")
    assert one.tag("sha256:p") != other.tag("sha256:p")
    assert one.tag("sha256:p") != one.tag("sha256:q"), "a rebuilt parent changes every child's tag"
    assert one.tag().startswith("envfarm/env.octo__demo-1.0:")
    assert slug("Psf/Requests") == "psf__requests"


@pytest.mark.engine
def test_build_then_cache_hit_then_rebuild_on_change(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    recipe = ImageRecipe(
        kind="env",
        name="pytest-layer",
        parent=base_image,
        files=(("/opt/hello.txt", b"hello from a recipe\n"),),
        steps=("cat /opt/hello.txt > /opt/copied.txt",),
        user="1000",
    )
    built: list[str] = []
    try:
        first = ensure_image(recipe, engine_client)
        built.append(first.tag)
        second = ensure_image(recipe, engine_client)
        assert second.cached and second.tag == first.tag
        image = engine_client.images.get(first.tag)
        assert image.labels["envfarm.io/kind"] == "env"
        assert image.labels["envfarm.io/recipe-hash"] == first.tag.rsplit(":", 1)[1]
        out = engine_client.containers.run(first.tag, ["cat", "/opt/copied.txt"], remove=True, network_mode="none")
        assert out == b"hello from a recipe\n"
        changed = ensure_image(ImageRecipe(**{**recipe.__dict__, "steps": ("echo changed > /opt/copied.txt",)}), engine_client)
        built.append(changed.tag)
        assert not changed.cached and changed.tag != first.tag
    finally:
        for tag in built:
            engine_client.images.remove(tag, force=True)


@pytest.mark.engine
def test_a_failing_step_raises_with_its_log(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    recipe = ImageRecipe(kind="env", name="pytest-broken", parent=base_image, steps=("echo about-to-fail && exit 7",))
    with pytest.raises(ImageBuildError) as info:
        ensure_image(recipe, engine_client)
    assert "about-to-fail" in info.value.log
    assert "fix:" in info.value.line()


@pytest.mark.engine
def test_a_missing_parent_is_named(engine_client) -> None:  # type: ignore[no-untyped-def]
    recipe = ImageRecipe(kind="env", name="orphan", parent="envfarm/nothing:here")
    with pytest.raises(ImageMissing, match="envfarm/nothing:here"):
        ensure_image(recipe, engine_client)


def test_recipe_files_are_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.yaml"
    good.write_text("kind: env\nname: demo\nsteps: ['echo hi']\nfiles: {/opt/a: 'x'}\nnetwork: true\n")
    recipe = load_recipe(good)
    assert recipe.steps == ("echo hi",) and recipe.files == (("/opt/a", b"x"),) and recipe.network
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: nonsense\nname: demo\nstep: typo\n")
    with pytest.raises(EnvfarmError, match="is invalid"):
        load_recipe(bad)
    with pytest.raises(EnvfarmError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.mark.engine
def test_prune_keeps_referenced_images_and_removes_the_rest(engine_client, base_image, store) -> None:  # type: ignore[no-untyped-def]
    from envfarm.images.prune import prune
    from envfarm.store.models import TaskRow

    kept = ensure_image(ImageRecipe(kind="instance", name="prune-keep", parent=base_image, steps=("true",)), engine_client)
    gone = ensure_image(ImageRecipe(kind="instance", name="prune-gone", parent=base_image, steps=("true",)), engine_client)
    with store.session() as session:
        session.add(TaskRow(instance_id="o__r-1", image=kept.tag, spec={}))
    assert not [t for t in prune(engine_client, store, dry_run=True) if "envfarm/base" in t], "base images stay"
    removed = prune(engine_client, store, name_prefix="prune-")  # scoped: other tests' images are not ours to remove
    try:
        assert gone.tag in [t.removeprefix("docker.io/") for t in removed]
        assert all(kept.tag not in t for t in removed)
        assert all("prune-" in t for t in removed)
    finally:
        for tag in (kept.tag, gone.tag):
            try:
                engine_client.images.remove(tag, force=True)
            except Exception:
                pass


@pytest.mark.engine
@pytest.mark.slow
def test_network_builds_reach_the_package_registry_through_the_proxy(engine_client, base_image) -> None:  # type: ignore[no-untyped-def]
    """pip inside a build works behind the TLS-intercepting proxy: the host CA bundle and proxies are passed in."""
    recipe = ImageRecipe(
        kind="env",
        name="pytest-pip",
        parent=base_image,
        network=True,
        steps=("python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-deps --quiet six==1.16.0",),
    )
    result = ensure_image(recipe, engine_client)
    try:
        out = engine_client.containers.run(result.tag, ["/opt/venv/bin/python", "-c", "import six; print(six.__version__)"], remove=True, network_mode="none")
        assert out.strip() == b"1.16.0"
    finally:
        engine_client.images.remove(result.tag, force=True)
