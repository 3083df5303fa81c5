"""One controller / gate configuration (issue 13): configs written before it still load, the
recipes' shorter arguments give the same model and objective, and the CLI flags map onto it."""
import dataclasses
import subprocess
from pathlib import Path

import pytest
import torch

from hardkuma_attention.cli import build_parser
from hardkuma_attention.cli.rationale import configs_from_args
from hardkuma_attention.config import ControllerConfig, GateConfig
from hardkuma_attention.rationale import LabelMap, ModelConfig, ObjectiveConfig, Pipeline, RationaleModel
from hardkuma_attention.rationale import RationaleObjective, load_pipeline
from hardkuma_attention.rationale.embeddings import build_vocab

ROOT = Path(__file__).resolve().parents[2]
# HARDKUMA_CONTROLLER of recipes/rationale_runs.sh before issue 13.
OLD_CONTROLLER = ("--equality --lambda-init 0 --ab-map sigmoid --ab-clamp 0.1 10 --lagrange-lr 0.002 "
                  "--lagrange-alpha 0.9 --lagrange-damping 1 --selection-measure decoded --selection-gradient open")
# ObjectiveConfig / ModelConfig as dataclasses.asdict wrote them before issue 13 (model.pt, results.json).
OLD_OBJECTIVE = {"selection": 0.3, "lasso": None, "lagrange_lr": 0.05, "lagrange_alpha": 0.8, "lambda_init": 0.5,
                 "lambda_max": 3.0, "equality": False, "sparsity_weight": 0.0, "sparsity_target": 0.0,
                 "coherence_weight": 0.0, "baseline_decay": 0.95, "constraint_warmup": 7, "selection_anneal": 0,
                 "lagrange_damping": 0.25, "selection_measure": "expected", "selection_gradient": "l0",
                 "lasso_measure": "per_selected", "lasso_priority": None}
OLD_MODEL = {"vocab_size": 9, "embed_dim": 4, "hidden_size": 3, "num_outputs": 2, "task": "classification",
             "gate": "hardkuma", "selector": "dependent", "dependent_hidden": 30, "dropout": 0.0,
             "freeze_embeddings": True, "skip_zeros": True, "support": [-0.2, 1.2], "ab_clamp": [0.05, 20.0],
             "ab_map": "clamp", "pooling": "final", "bernoulli_decode_rate": None, "encoder": "lstm",
             "cnn_kernel": 5, "cnn_layers": 2}


def test_old_flat_objective_config_maps_onto_the_controller():
    cfg = ObjectiveConfig.from_dict(OLD_OBJECTIVE)
    assert cfg.controller == ControllerConfig(alpha=0.8, lr=0.05, lambda_init=0.5, lambda_max=3.0, equality=False,
                                              damping=0.25, observe="expected", warmup=7)
    assert (cfg.selection, cfg.selection_gradient, cfg.lasso_measure) == (0.3, "l0", "per_selected")
    # the old defaults are the "rationale" preset: an old default config is today's default
    old_defaults = dict(OLD_OBJECTIVE, selection=None, lagrange_lr=0.002, lagrange_alpha=0.9, lambda_init=None,
                        lambda_max=5.0, equality=True, constraint_warmup=0, lagrange_damping=1.0,
                        selection_measure="decoded", selection_gradient="open")
    assert ObjectiveConfig.from_dict(old_defaults) == ObjectiveConfig()
    # today's shape round-trips
    assert ObjectiveConfig.from_dict(dataclasses.asdict(cfg)) == cfg


def test_old_flat_model_config_maps_onto_the_gate():
    cfg = ModelConfig.from_dict(OLD_MODEL)
    assert cfg.gate_config == GateConfig(support=(-0.2, 1.2), ab_map="clamp", ab_range=(0.05, 20.0))
    assert ModelConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    with pytest.raises(ValueError, match="dependent_hidden"):
        ModelConfig.from_dict(dict(OLD_MODEL, dependent_hidden=12))


def test_checkpoint_with_old_config_shapes_loads_with_the_same_model(tmp_path):
    torch.manual_seed(0)
    mcfg = ModelConfig.from_dict(OLD_MODEL)
    ocfg = ObjectiveConfig.from_dict(OLD_OBJECTIVE)
    pipe = Pipeline(RationaleModel(mcfg), RationaleObjective(ocfg, "hardkuma"), build_vocab([["a", "b"]]),
                    LabelMap(["neg", "pos"]))
    state = pipe.state()
    state["model_config"], state["objective_config"] = dict(OLD_MODEL), dict(OLD_OBJECTIVE)  # as written then
    torch.save(state, tmp_path / "model.pt")
    loaded = load_pipeline(tmp_path / "model.pt")
    assert loaded.model.config == mcfg and loaded.objective.config == ocfg
    tokens = torch.tensor([[2, 3, 1, 0]])
    assert torch.equal(loaded.model.eval()(tokens, tokens != 0).z, pipe.model.eval()(tokens, tokens != 0).z)
    assert loaded.model.selector.gate.ab_map == "clamp"  # the dependent selector got the gate config


def _recipe_controller() -> str:
    out = subprocess.run(["bash", "-c", f'. "{ROOT}/recipes/rationale_runs.sh"; printf %s "$HARDKUMA_CONTROLLER"'],
                         capture_output=True, text=True, check=True)
    return out.stdout


def _configs(extra: str):
    argv = ["train", "--format", "jsonl", "--train", "t", "--dev", "d", "--out", "o", "--gate", "hardkuma",
            "--selection", "0.3"] + extra.split()
    return configs_from_args(build_parser().parse_args(argv), vocab_size=10, embed_dim=4, num_outputs=2)


def _effective(ocfg: ObjectiveConfig) -> ObjectiveConfig:
    """``lambda_init=None`` is 0 for an equality constraint: the multiplier the objective starts with."""
    return dataclasses.replace(ocfg, controller=ocfg.controller.replace(lambda_init=ocfg.controller.initial_multiplier))


def test_recipe_controller_gives_the_same_configs_as_the_old_expanded_arguments():
    new, old = _recipe_controller(), OLD_CONTROLLER
    assert new == "--controller rationale"
    (m_new, o_new, t_new), (m_old, o_old, t_old) = _configs(new), _configs(old)
    assert m_new == m_old and t_new == t_old
    assert _effective(o_new) == _effective(o_old)
    assert o_old.controller.lambda_init == 0.0 and o_new.controller.lambda_init is None  # the only literal difference
    a, b = RationaleObjective(o_new, "hardkuma"), RationaleObjective(o_old, "hardkuma")
    assert repr(a) == repr(b)  # the constraints' settings
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # and the package defaults are the recipe's
    assert _configs("")[:2] == (m_new, o_new)


def test_controller_and_gate_flags_override_their_presets():
    m, o, _ = _configs("--controller paper --lagrange-lr 0.05 --no-equality --lagrange-damping 0.5 "
                       "--selection-measure decoded --constraint-warmup 3 --ab-clamp 0.2 5")
    assert o.controller == ControllerConfig.preset("paper", lr=0.05, damping=0.5, observe="decoded", warmup=3)
    assert m.gate_config == GateConfig.preset("rationale", ab_range=(0.2, 5.0))  # --ab-clamp: --ab-range's alias
    m, _, _ = _configs("--gate-preset attention --ab-range 0.01 50")
    assert m.gate_config == GateConfig(ab_map="clamp", ab_range=(0.01, 50.0))
