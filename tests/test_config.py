import pytest

from retention.config import ConfigError, load_profile


@pytest.mark.parametrize("name", ["tiny", "local", "gcp", "telco"])
def test_every_shipped_profile_loads(name):
    p = load_profile(name)
    assert p.name == name
    assert p.data.customers.target == "Churn"


def test_local_is_the_default():
    assert load_profile().name == "local"


def test_override_sets_nested_value_with_its_type():
    p = load_profile("tiny", overrides=["risk.max_depth=7", "gates.risk.min.auc=0.9"])
    assert p.risk.max_depth == 7
    assert p.gates.risk.min["auc"] == 0.9


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'risk.max_dpth'"):
        load_profile("tiny", overrides=["risk.max_dpth=3"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"key 'risk.n_estimators'.*integer"):
        load_profile("tiny", overrides=["risk.n_estimators=lots"])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    text = (load_profile.__globals__["CONFIG_DIR"] / "tiny.yaml").read_text()
    cfg.write_text(text + "\nbogus_section: {a: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_profile(config=cfg)
    assert "bad.yaml" in str(err.value) and "bogus_section" in str(err.value)


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown profile 'nope'.*tiny"):
        load_profile("nope")


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="split"):
        load_profile("tiny", overrides=["split.train=0.9"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_profile("tiny", overrides=["risk.max_depth"])


def test_env_assumptions_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"decision.env.*followup_days needs exactly 8"):
        load_profile("tiny", overrides=["decision.env.followup_days=[1, 2]"])
    with pytest.raises(ConfigError, match=r"decision.env.*must lie in \[0, 1\)"):
        load_profile("tiny", overrides=["decision.env.hazard_reduction=[0.1, 0.2, 0.3, 1.5]"])


def test_one_dual_can_be_overridden_without_losing_the_others():
    p = load_profile("tiny", overrides=["decision.lagrange.budget.lr=3"])
    assert p.decision.lagrange.budget.lr == 3.0
    assert p.decision.lagrange.fatigue.init == 1.0 and p.decision.lagrange.cooldown.lr == 0.5
