"""Maps the repository's top-level folders under the `envfarm` import namespace.

The checkout keeps `envfarm/`, `tasks/`, `verifiers/` and `trainer/` side by side (the layout users know),
but an installed envfarm must not claim the top-level names `tasks`, `verifiers` (Prime Intellect's
environment library), `trainer`, `agent` or `integrations`: they install as `envfarm.tasks`,
`envfarm.verifiers`, `envfarm.trainer`, `envfarm.agent` (the agent scaffold) and `envfarm.integrations`. pyproject.toml cannot compute this package list, so it lives here; everything else
about the distribution is in pyproject.toml.
"""

from setuptools import find_packages, setup

MAPPED = ("tasks", "verifiers", "trainer", "agent", "integrations")

packages = find_packages(include=["envfarm", "envfarm.*"])
for folder in MAPPED:
    packages += [f"envfarm.{name}" for name in find_packages(include=[folder, f"{folder}.*"])]

setup(
    packages=packages,
    package_dir={"envfarm": "envfarm", **{f"envfarm.{folder}": folder for folder in MAPPED}},
    package_data={
        "envfarm.store": ["migrations/script.py.mako"],
        "envfarm.tasks": ["README.md", "examples/*.txt", "envsetup/node/*.mjs"],
        "envfarm.trainer": ["checkpoints/tiny/*", "configs/*.yaml"],
    },
)
