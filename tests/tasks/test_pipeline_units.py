"""The driver records a broken unit against that unit and goes on (no engine needed for these paths)."""

from envfarm.tasks.pipeline import MineConfig, parse_repo_line, run_inline
from envfarm.tasks.store import funnel


def test_a_crashing_repository_is_recorded_and_the_batch_goes_on(store, tmp_path, monkeypatch):
    import envfarm.tasks.pipeline as pipeline

    real = pipeline.load_activity

    def flaky_source(repo, config):
        if repo == "acme/buggy":
            raise RuntimeError("simulated bug in a source")
        return real(repo, config)

    monkeypatch.setattr(pipeline, "load_activity", flaky_source)
    config = MineConfig(home=tmp_path, offline_dir=tmp_path / "dumps")
    ticks = []
    run_inline([("acme/buggy", ""), ("acme/missing", "")], config, store, lambda what, n=1: ticks.append(what))
    summary = funnel(store)
    assert summary["repos"] == {"failed:internal_error": 1, "failed:repo_not_found": 1}
    assert ticks.count("repos") == 2


def test_repo_lines():
    assert parse_repo_line("  # comment") is None
    assert parse_repo_line("https://github.com/o/r.git") == ("o/r", "")
    assert parse_repo_line("o/r /srv/mirrors/r.git  # local") == ("o/r", "/srv/mirrors/r.git")
    import pytest
    from envfarm.errors import EnvfarmError

    with pytest.raises(EnvfarmError, match="owner/name"):
        parse_repo_line("justaname")
