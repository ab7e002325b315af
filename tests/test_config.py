import pytest
import yaml

from retention import catalogue
from retention.config import CONFIG_DIR, ConfigError, load_profile


@pytest.mark.parametrize("name", ["tiny", "local", "gcp", "telco"])
def test_every_shipped_profile_loads(name):
    p = load_profile(name)
    assert p.name == name
    assert p.data.customers.target == "Churn"


def test_local_is_the_default():
    assert load_profile().name == "local"


def test_override_sets_nested_value_with_its_type():
    p = load_profile("tiny", overrides=["risk.max_depth=7", "gates.risk.min.test_auc=0.9"])
    assert p.risk.max_depth == 7
    assert p.gates["risk"].min["test_auc"] == 0.9


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


# ------------------------------------------------------------------------------------- extends


def test_telco_states_only_what_differs_and_gets_the_rest_from_local():
    raw = yaml.safe_load((CONFIG_DIR / "telco.yaml").read_text())
    assert raw["extends"] == "local"
    telco, local = load_profile("telco"), load_profile("local")
    stated = set(raw) - {"name", "extends"}
    assert stated and stated < set(type(telco).model_fields)
    for key in set(type(telco).model_fields) - stated - {"name", "extends"}:
        assert getattr(telco, key) == getattr(local, key), key
    # Inside a stated section only the stated keys differ: mappings merge key by key.
    assert telco.data.customers.uri == raw["data"]["customers"]["uri"]
    assert telco.data.customers.target == local.data.customers.target
    assert telco.data.orders == local.data.orders


def _profile(path, text):
    path.write_text(text)
    return path


def test_an_extends_cycle_names_the_files(tmp_path):
    _profile(tmp_path / "a.yaml", "name: a\nextends: b\n")
    _profile(tmp_path / "b.yaml", "name: b\nextends: a\n")
    with pytest.raises(ConfigError, match="'extends' forms a cycle") as err:
        load_profile(config=tmp_path / "a.yaml")
    assert "a.yaml -> " in str(err.value) and "b.yaml" in str(err.value)


def test_an_unknown_base_names_the_key(tmp_path):
    cfg = _profile(tmp_path / "c.yaml", "name: c\nextends: nowhere\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'extends': unknown profile 'nowhere'"):
        load_profile(config=cfg)


def test_a_child_of_a_shipped_profile_changes_one_key(tmp_path):
    cfg = _profile(tmp_path / "mine.yaml", "name: mine\nextends: tiny\nseed: 7\n")
    p, tiny = load_profile(config=cfg), load_profile("tiny")
    assert p.seed == 7 and p.data == tiny.data and p.gates == tiny.gates


# ---------------------------------------------------------------------- names from the catalogue


@pytest.mark.parametrize(
    ("override", "key", "name"),
    [
        ("gates.bogus.min.test_auc=1", "gates", "bogus"),
        ("pipeline.resources.train-rsk.memory=8G", "pipeline.resources", "train-rsk"),
        ("serving.deployments.risky.memory=8G", "serving.deployments", "risky"),
        ("serving.predictor_urls.riskk=http://x", "serving.predictor_urls", "riskk"),
        # The old spellings are gone: one name per model.
        ("gates.decision.min.uplift_vs_best_baseline=0", "gates", "decision"),
        (
            "pipeline.resources.train_phase_health.memory=8G",
            "pipeline.resources",
            "train_phase_health",
        ),
    ],
)
def test_an_unknown_name_is_an_error_naming_the_key(override, key, name):
    with pytest.raises(ConfigError, match=rf"{key}: unknown name\(s\) '{name}' \(known: "):
        load_profile("tiny", overrides=[override])


def test_known_names_are_the_catalogues():
    p = load_profile("gcp")
    assert set(p.gates) <= set(catalogue.BY_NAME)
    assert set(p.pipeline.resources) <= set(catalogue.tasks())
    assert set(p.serving.deployments) == {*catalogue.services(), catalogue.ORCHESTRATOR}


def test_a_gate_on_a_field_of_another_models_result_names_the_key():
    # monotone_violations is the accept model's field, not the risk model's.
    assert load_profile("tiny", overrides=["gates.accept.max.monotone_violations=0"])
    with pytest.raises(
        ConfigError, match=r"gates.risk.max: unknown name\(s\) 'monotone_violations'"
    ):
        load_profile("tiny", overrides=["gates.risk.max.monotone_violations=0"])


def test_an_unknown_gate_metric_names_the_key():
    # The metric is the result's field name: ``auc`` was the old shorthand for ``test_auc``.
    with pytest.raises(
        ConfigError, match=r"gates.risk.min: unknown name\(s\) 'auc' \(known: test_auc"
    ):
        load_profile("tiny", overrides=["gates.risk.min.auc=0.9"])
    # A text field is not a metric a gate can compare.
    with pytest.raises(ConfigError, match=r"gates.ltv.min: unknown name\(s\) 'chosen'"):
        load_profile("tiny", overrides=["gates.ltv.min.chosen=1"])


def test_a_gate_given_replaces_that_models_defaults_only():
    p = load_profile("tiny", overrides=["gates.rm.min.accuracy=0.5"])
    assert p.gates["rm"].min == {"accuracy": 0.5}
    assert p.gates["risk"] == load_profile("tiny").gates["risk"]
    for s in catalogue.gated():
        assert s.name in p.gates, s.name
