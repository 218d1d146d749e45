"""What the demo runs: systems (one target or several sizes from one run), the LM prunings, the
settings' checks and the length of each system's fine-tuning."""

import pytest
import yaml

from espnet_prune.demo import settings as demo_settings
from espnet_prune.demo.layout import RECIPES
from espnet_prune.demo.settings import DemoSettings, LMPruning, System, SystemSize
from espnet_prune.pruning.config import PruningConfig


def test_systems_name_themselves_and_set_the_pruning_of_the_frontend():
    assert System("dense").name == "dense"
    assert System("dense").frontend_overrides(300) == ["pruning=null"]
    macs = System("hj_macs", 0.5)
    assert macs.name == "hj_macs_0.50"
    assert macs.frontend_overrides(300) == ["pruning.warmup_steps=300", "pruning.metric=macs", "pruning.target=0.5"]
    assert "pruning.metric=params" in System("hj_params", 0.6).frontend_overrides(10)
    separate = System("separate", 0.4).frontend_overrides(10)
    assert "pruning.cnn_target=0.4" in separate and "pruning.transformer_target=0.4" in separate
    assert demo_settings.parse_system("hj_params:0.6") == System("hj_params", 0.6)
    assert demo_settings.parse_system("dense") == System("dense")
    # The probe: the dense model from random initialisation (no checkpoint, so arch alone builds it).
    assert System("scratch").name == "scratch"
    assert System("scratch").frontend_overrides(10) == ["pruning=null", "checkpoint=null"]
    transformer = System("transformer_only", 0.7).frontend_overrides(10)
    units = yaml.safe_load(next(item for item in transformer if item.startswith("pruning.units=")).split("=", 1)[1])
    assert set(units) == set(demo_settings.LAYER_UNITS) and "conv" not in units
    assert "pruning.target=0.7" in transformer and "pruning.metric=macs" in transformer


def test_a_whole_model_system_moves_the_budget_to_model_conf_and_a_latency_system_names_its_table():
    whole = demo_settings.parse_system("whole_model:0.8")
    assert whole == System("whole_model", 0.8) and whole.name == "whole_model_0.80"
    assert whole.frontend_overrides(10) == ["pruning=null"]  # the frontend takes no budget of its own
    overrides = whole.model_overrides({"preset": "hj_macs0.6", "reg_lr": 0.05, "units": ["conv", "head"]}, 10,
                                      beam_size=4, tokens_per_second=18.0)
    assert overrides == ["pruning.preset=hj_macs0.6", "pruning.reg_lr=0.05", 'pruning.units=["conv","head"]',
                         "pruning.warmup_steps=10", "pruning.metric=macs", "pruning.target=0.8",
                         "pruning.decoding.beam_size=4", "pruning.decoding.tokens_per_second=18.0",
                         "pruning.decoding.ctc_weight=1.0"]
    assert all(" " not in item for item in overrides)  # they pass through asr.sh's --asr_args
    assert System("hj_macs", 0.8).model_overrides({}, 10, 4, 18.0) == []
    latency = demo_settings.parse_system("hj_latency:0.7")
    assert latency.frontend_overrides(10, latency_table="/t.json") == [
        "pruning.warmup_steps=10", "pruning.metric=latency", "pruning.target=0.7", "pruning.latency_table=/t.json"]
    with pytest.raises(ValueError, match="needs latency_table"):
        latency.frontend_overrides(10)
    for method in demo_settings.WHOLE_MODEL_METHODS + demo_settings.LATENCY_METHODS:
        assert method in demo_settings.METHODS and method in {system.method for system in DemoSettings().systems}


def test_another_seed_is_another_system_spelled_with_at():
    system = demo_settings.parse_system("hj_macs:0.5@2")
    assert system == System("hj_macs", 0.5, seed=2) and system.name == "hj_macs_0.50_seed2"
    assert system.frontend_overrides(10) == System("hj_macs", 0.5).frontend_overrides(10)
    assert demo_settings.parse_system("dense@1").name == "dense_seed1"
    multi = demo_settings.parse_system("hj_macs_multi:0.8/0.6@1")
    assert multi.sizes[1].name == "hj_macs_multi_0.80_0.60_seed1/target0.60"
    for text in ("dense", "hj_macs:0.5@2", "hj_params:0.84", "hj_macs_multi:0.8/0.6@1"):
        system = demo_settings.parse_system(text)
        assert demo_settings.parse_system(system.spelling) == system
    assert DemoSettings(systems=(System("dense"), System("dense", seed=1))).as_dict()["systems"] == ["dense",
                                                                                                  "dense_seed1"]


def test_the_paper_preset_runs_every_method_at_three_mac_ratios_with_seeds():
    settings = DemoSettings(**demo_settings.SIZES["paper"])
    names = [system.name for system in settings.systems]
    assert len(names) == len(set(names)) and not settings.uses_lm
    seeds = {}
    for system in settings.systems:
        seeds.setdefault((system.method, system.target), set()).add(system.seed)
    assert seeds.pop(("dense", None)) == set(range(demo_settings.PAPER_DENSE_SEEDS)) == {0, 1, 2}
    assert all(found == set(range(demo_settings.PAPER_SEEDS)) == {0, 1} for found in seeds.values())
    for ratio in demo_settings.PAPER_RATIOS:
        assert {("hj_macs", ratio), ("separate", ratio)} <= set(seeds)
        assert ("hj_params", demo_settings.params_target_for_macs(ratio)) in seeds
    # Transformer-only pruning cannot go below the CNN's share of the MACs (0.6995 on this encoder).
    assert {target for method, target in seeds if method == "transformer_only"} == {0.9}
    # HJ-Size aims at the MAC ratio through the measured 0.6 params <-> 0.5 MACs.
    assert demo_settings.params_target_for_macs(0.5) == 0.6 and demo_settings.params_target_for_macs(0.9) == 0.92


@pytest.mark.parametrize("text, message", [("hj_macs", "needs a target"), ("dense:0.5", "takes no target"),
                                           ("scratch:0.5", "takes no target"), ("transformer_only", "needs a target"),
                                           ("hj_macs:1.5", "keep ratio in"), ("magnitude:0.5", "unknown pruning"),
                                           ("dense@x", "seed after '@'"), ("hj_macs:0.5@-1", "seed after '@'")])
def test_bad_systems_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        demo_settings.parse_system(text)


def test_lm_prunings_are_spelled_with_lm_prunes_choices():
    # The choices are lm_prune's own (espnet_prune.lm.choices, see test_lm_choices.py).
    for criterion, method, scheduler in [("magnitude", "unstructured", "oneshot"), ("data", "lowrank", "incremental")]:
        assert demo_settings.parse_lm_pruning(f"{criterion}/{method}/{scheduler}").name == (
            f"{criterion}_{method}_{scheduler}")
    with pytest.raises(ValueError, match="criterion in \\('magnitude', 'data'\\)"):
        demo_settings.parse_lm_pruning("fisher/lowrank/oneshot")
    assert demo_settings.parse_lm_pruning("data/lowrank/incremental") == LMPruning("data", "lowrank", "incremental")
    with pytest.raises(ValueError, match="criterion/method/scheduler"):
        demo_settings.parse_lm_pruning("data/lowrank")


def test_settings_are_checked():
    with pytest.raises(ValueError, match="must be below finetune_steps"):
        DemoSettings(finetune_steps=100, prune_warmup_steps=100)
    with pytest.raises(ValueError, match="fusion_system 'hj_macs_0.30' is not one of"):
        DemoSettings(fusion_system="hj_macs_0.30")
    with pytest.raises(ValueError, match="systems repeat"):
        DemoSettings(systems=(System("dense"), System("dense")))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DemoSettings(batch_size=0)
    assert not DemoSettings(task="slu").uses_lm and DemoSettings().uses_lm
    assert DemoSettings().as_dict()["systems"] == ["dense", "hj_macs_0.80", "hj_params_0.84", "separate_0.80",
                                                  "transformer_only_0.80", "whole_model_0.80", "hj_latency_0.80"]


def test_a_multi_size_system_names_its_sizes_and_resolves_to_targets_with_holds():
    system = demo_settings.parse_system("hj_macs_multi:0.8/0.6/0.4")
    assert system == System("hj_macs_multi", targets=(0.8, 0.6, 0.4)) and system.multi_size
    assert system.name == "hj_macs_multi_0.80_0.60_0.40"
    assert [size.name for size in system.sizes] == [f"{system.name}/target{t}" for t in ("0.80", "0.60", "0.40")]
    assert [size.target for size in system.sizes] == [0.8, 0.6, 0.4]
    assert System("hj_macs", 0.5).sizes == [SystemSize(System("hj_macs", 0.5))]
    with pytest.raises(ValueError, match="needs hold_steps"):
        system.frontend_overrides(200)
    # On top of the fine-tuning config's preset the overrides give three sizes, each held 300 steps.
    pruning = yaml.safe_load((RECIPES / "asr1" / "conf" / "train_asr_pruned_ssl.yaml").read_text())
    overrides = dict(item.split("=", 1) for item in system.frontend_overrides(200, 300))
    values = {key.split(".", 1)[1]: yaml.safe_load(value) for key, value in overrides.items()}
    resolved = PruningConfig.from_dict({**pruning["frontend_conf"]["pruning"], **values})
    assert resolved.sizes() == [{"total": 0.8}, {"total": 0.6}, {"total": 0.4}]
    assert (resolved.metric, resolved.warmup_steps, resolved.effective_hold_steps) == ("macs", 200, 300)


@pytest.mark.parametrize("text, message", [
    ("hj_macs_multi:0.8/0.8", "strictly decreasing"), ("hj_macs_multi:0.6/0.8", "strictly decreasing"),
    ("hj_macs_multi:0.8", "two or more targets"), ("hj_macs_multi", "two or more targets"),
    ("hj_macs_multi:1.0/0.5", r"keep ratios in \(0, 1\)"), ("hj_macs_multi:0.8/0", r"keep ratios in \(0, 1\)"),
    ("hj_macs_multi:0.8/x", "could not convert"), ("hj_macs:0.8/0.6", "takes one target"),
    ("hj_macs_multi:0.801/0.8", "first two decimals")])
def test_bad_multi_size_systems_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        demo_settings.parse_system(text)


def test_a_multi_size_run_holds_each_size_as_long_as_a_single_run_trains_after_its_ramp():
    system = demo_settings.parse_system("hj_macs_multi:0.8/0.6/0.4")
    settings = DemoSettings(systems=(System("dense"), System("hj_macs", 0.8), system))
    assert settings.multisize_hold_steps == settings.finetune_steps - settings.prune_warmup_steps == 200
    assert settings.training_steps(system) == 3 * (200 + 200)
    assert settings.training_steps(System("hj_macs", 0.8)) == settings.finetune_steps
    assert [size.name for size in settings.sizes()] == ["dense", "hj_macs_0.80"] + [size.name for size in system.sizes]
    # The ramp of each size is as long as the controller's rule wants for the demo's reg_lr.
    from espnet_prune.pruning.metrics import MIN_WARMUP_TIMES_LR

    config = yaml.safe_load((RECIPES / "asr1" / "conf" / "train_asr_pruned_ssl.yaml").read_text())
    assert settings.multisize_warmup_steps * config["frontend_conf"]["pruning"]["reg_lr"] >= MIN_WARMUP_TIMES_LR["macs"]
    with pytest.raises(ValueError, match="has several sizes"):
        DemoSettings(systems=(system,), fusion_system=system.name)
    assert "multisize_warmup_steps" in settings.as_dict()
