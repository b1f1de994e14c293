"""EWC: the Fisher against hand arithmetic, the penalty's shape, online decay, persistence, PEFT."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from _models import tiny_llama

from rehearsal.errors import ConfigError, StoreFormatError, ValidationError
from rehearsal.methods.ewc import EWC, EWCConfig, log_likelihood


class Logistic(torch.nn.Module):
    """p(y=1 | x) = sigmoid(w·x + b), written as two logits [0, w·x + b] like an HF classifier."""

    def __init__(self, w: float = 0.0, b: float = 0.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.b = torch.nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> Any:
        z = self.w * x + self.b
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], dim=-1))


def batch(xs: list[float], ys: list[int]) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor(xs), "labels": torch.tensor(ys)}


# Hand arithmetic for the logistic model: d log p(y | x) / dz = y − sigmoid(z), dz/dw = x, dz/db = 1.
# At w = b = 0, sigmoid = 0.5. Examples (x=1, y=1) and (x=2, y=0):
#   per-example gradients (w, b): (0.5·1, 0.5) and (−0.5·2, −0.5) = (0.5, 0.5) and (−1, −0.5)
#   mean of squares:  F_w = (0.25 + 1) / 2 = 0.625,  F_b = (0.25 + 0.25) / 2 = 0.25
#   square of the mean (the bug): ((0.5 − 1) / 2)^2 = 0.0625 and ((0.5 − 0.5) / 2)^2 = 0
HAND = batch([1.0, 2.0], [1, 0])


def test_empirical_fisher_is_the_mean_of_squared_per_example_gradients():
    fisher = EWC(EWCConfig(fisher="empirical")).estimate_fisher(Logistic(), [HAND])
    assert fisher["w"].item() == pytest.approx(0.625)
    assert fisher["b"].item() == pytest.approx(0.25)


def test_fisher_is_the_same_whether_examples_come_in_one_batch_or_many():
    split = [batch([1.0], [1]), batch([2.0], [0])]
    one = EWC(EWCConfig(fisher="empirical")).estimate_fisher(Logistic(), [HAND])
    many = EWC(EWCConfig(fisher="empirical")).estimate_fisher(Logistic(), split)
    assert one["w"].item() == pytest.approx(many["w"].item())


def test_sampled_fisher_matches_the_closed_form_expectation():
    # True Fisher: E_{y ~ p}[(y − p)^2] · x^2 = p(1 − p) x^2. With w = ln 3, x = 1: p = 0.75, F_w = 0.1875.
    model = Logistic(w=math.log(3.0))
    data = [batch([1.0] * 400, [0] * 400) for _ in range(2)]  # labels are ignored when sampling
    fisher = EWC(EWCConfig(fisher="sampled", max_examples=None)).estimate_fisher(model, data)
    assert fisher["w"].item() == pytest.approx(0.1875, abs=0.03)  # Monte Carlo std ≈ 0.0077
    assert fisher["b"].item() == pytest.approx(0.1875, abs=0.03)


def test_max_examples_caps_the_examples_used():
    # Only the first example (gradient (0.5, 0.5)) counts: F_w = 0.25.
    fisher = EWC(EWCConfig(fisher="empirical", max_examples=1)).estimate_fisher(Logistic(), [HAND, HAND])
    assert fisher["w"].item() == pytest.approx(0.25)


def test_penalty_is_zero_at_the_anchor():
    model = Logistic(w=0.3, b=-0.2)
    ewc = EWC(EWCConfig(lam=10.0, fisher="empirical"))
    ewc.consolidate(model, [HAND])
    assert ewc.penalty(model).item() == 0.0


def test_penalty_is_zero_before_any_consolidation():
    assert EWC().penalty(Logistic()).item() == 0.0


def test_penalty_grows_quadratically_with_the_distance_from_the_anchor():
    model = Logistic()
    ewc = EWC(EWCConfig(lam=4.0, fisher="empirical"))
    ewc.consolidate(model, [HAND])
    with torch.no_grad():
        model.w += 0.1
    near = ewc.penalty(model).item()
    with torch.no_grad():
        model.w += 0.1
    far = ewc.penalty(model).item()
    assert near == pytest.approx(0.5 * 4.0 * 0.625 * 0.1**2)
    assert far == pytest.approx(4 * near)


def test_penalty_gradient_pulls_parameters_back_towards_the_anchor():
    model = Logistic()
    ewc = EWC(EWCConfig(lam=2.0, fisher="empirical"))
    ewc.consolidate(model, [HAND])
    with torch.no_grad():
        model.w += 0.5
    ewc(model).backward()
    assert model.w.grad is not None
    assert model.w.grad.item() == pytest.approx(2.0 * 0.625 * 0.5)  # lam · F_w · (w − w*)


def test_frozen_parameters_are_not_consolidated_nor_penalised():
    model = Logistic()
    model.w.requires_grad_(False)
    ewc = EWC(EWCConfig(lam=1.0, fisher="empirical"))
    ewc.consolidate(model, [HAND])
    assert set(ewc.fisher) == {"b"}
    with torch.no_grad():
        model.w += 5.0
    assert ewc.penalty(model).item() == 0.0


def test_online_ewc_decays_the_old_fisher_and_anchors_at_the_latest_parameters():
    model = Logistic()
    ewc = EWC(EWCConfig(gamma=0.5, fisher="empirical"))
    ewc.consolidate(model, [HAND])  # F = (0.625, 0.25)
    # Second task at the same point: (x=3, y=1) has gradient (0.5·3, 0.5) -> F_new = (2.25, 0.25).
    ewc.consolidate(model, [batch([3.0], [1])])
    assert ewc.fisher["w"].item() == pytest.approx(0.5 * 0.625 + 2.25)
    assert ewc.fisher["b"].item() == pytest.approx(0.5 * 0.25 + 0.25)
    with torch.no_grad():
        model.w += 0.3
    ewc.consolidate(model, [HAND])
    assert ewc.anchor["w"].item() == pytest.approx(0.3)
    assert ewc.penalty(model).item() == 0.0
    assert ewc.consolidations == 3


def test_save_and_load_round_trip(tmp_path):
    model = Logistic(w=0.2)
    ewc = EWC(EWCConfig(lam=3.0, gamma=0.9, fisher="empirical"))
    ewc.consolidate(model, [HAND])
    ewc.save(tmp_path / "ewc.pt")
    loaded = EWC.load(tmp_path / "ewc.pt", model=model)
    assert loaded.config == ewc.config
    assert loaded.consolidations == 1
    assert torch.equal(loaded.fisher["w"], ewc.fisher["w"])
    assert torch.equal(loaded.anchor["b"], ewc.anchor["b"])
    with torch.no_grad():
        model.b -= 0.7
    assert loaded.penalty(model).item() == pytest.approx(ewc.penalty(model).item())


def test_load_rejects_a_model_without_a_saved_parameter(tmp_path):
    ewc = EWC(EWCConfig(fisher="empirical"))
    ewc.consolidate(Logistic(), [HAND])
    ewc.save(tmp_path / "ewc.pt")
    other = torch.nn.Linear(1, 1)
    with pytest.raises(ValidationError, match="parameter 'w', which the model lacks"):
        EWC.load(tmp_path / "ewc.pt", model=other)
    with pytest.raises(ValidationError, match="parameter\\(s\\) the model lacks"):
        ewc.penalty(other)


def test_load_rejects_a_parameter_of_another_shape(tmp_path):
    ewc = EWC(EWCConfig(fisher="empirical"))
    ewc.consolidate(Logistic(), [HAND])
    ewc.save(tmp_path / "ewc.pt")
    wide = Logistic()
    wide.w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValidationError, match="'w' has shape \\(3,\\), EWC state has \\(\\)"):
        EWC.load(tmp_path / "ewc.pt", model=wide)
    with pytest.raises(ValidationError, match="'w' has shape \\(3,\\)"):
        ewc.penalty(wide)


def test_load_rejects_a_file_that_is_not_ewc_state(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(StoreFormatError, match="not an EWC state file"):
        EWC.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(StoreFormatError, match="cannot read EWC state"):
        EWC.load(tmp_path / "junk.pt")


def test_fisher_needs_labels_and_examples_and_trainable_parameters():
    with pytest.raises(ValidationError, match="needs 'labels'"):
        EWC().estimate_fisher(Logistic(), [{"x": torch.tensor([1.0])}])
    with pytest.raises(ValidationError, match="no examples"):
        EWC().estimate_fisher(Logistic(), [])
    frozen = Logistic().requires_grad_(False)
    with pytest.raises(ValidationError, match="no trainable parameters"):
        EWC().estimate_fisher(frozen, [HAND])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lam", -1.0, "'lam' must be a number >= 0"),
        ("gamma", 1.5, "'gamma' must be in \\[0, 1\\]"),
        ("gamma", -0.1, "'gamma' must be a number >= 0"),
        ("fisher", "exact", "'fisher' must be one of"),
        ("max_examples", 0, "'max_examples' must be a positive int or None"),
        ("seed", -1, r"'seed' must be an int in \[0, 2\*\*32 - 1\], got -1"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ConfigError, match=message):
        EWCConfig(**{field: value})


def test_config_round_trips_through_dict_file_and_pickle(tmp_path):
    config = EWCConfig(lam=50.0, gamma=0.8, fisher="empirical", max_examples=None, seed=3)
    assert EWCConfig.from_dict(config.to_dict()) == config
    config.save(tmp_path / "ewc.json")
    assert EWCConfig.load(tmp_path / "ewc.json") == config
    assert pickle.loads(pickle.dumps(config)) == config


def test_causal_lm_log_likelihood_matches_the_models_own_loss():
    model = tiny_llama()
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[1, 4:] = -100  # padding: positions the loss ignores
    ll = log_likelihood(
        model, {"input_ids": ids, "labels": labels, "is_replay": torch.tensor([0, 1])}, "empirical", None
    )
    for row in range(2):
        mean_nll = model(input_ids=ids[row : row + 1], labels=labels[row : row + 1]).loss
        n_scored = int((labels[row, 1:] != -100).sum())
        assert ll[row].item() == pytest.approx(-mean_nll.item() * n_scored, rel=1e-4)


def test_under_peft_only_lora_parameters_are_consolidated_and_penalised():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    ids = torch.randint(0, 64, (3, 6), generator=torch.Generator().manual_seed(1))
    ewc = EWC(EWCConfig(lam=1.0))
    ewc.consolidate(model, [{"input_ids": ids, "labels": ids}])
    assert ewc.fisher
    assert all("lora_" in name for name in ewc.fisher)
    # LoRA B starts at zero, so only B gets gradient; move it and the penalty must rise.
    assert any(f.sum() > 0 for name, f in ewc.fisher.items() if "lora_B" in name)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p += 0.1
    penalty = ewc(model)
    assert penalty.item() > 0
    penalty.backward()
    base = next(p for name, p in model.named_parameters() if "q_proj.base_layer" in name)
    assert base.grad is None
