"""The parts of a causal-LM run: answer-only labels, answer scores, the token loss, and the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rehearsal.errors import ConfigError
from rehearsal.replay.trainer import token_loss
from rehearsal.runner.causal.collator import CompletionCollator, answer_start
from rehearsal.runner.causal.evaluate import MAX_NEW_TOKENS, answer_budget, exact_match, token_f1
from rehearsal.runner.config import CAUSAL_METHODS, RunConfig
from rehearsal.runner.instructions import Instruction


class _Tokenizer:
    """Whitespace words to ids; "\\nAnswer:" is written as two tokens, as word-level tokenizers do."""

    eos_token_id, pad_token_id = 1, 0

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        words = text.replace(":", " :").split()
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab) + 2) for w in words]}


def test_the_collator_scores_the_answer_and_its_end_only() -> None:
    tok = _Tokenizer()
    collator = CompletionCollator(tok, max_length=16)
    ids = tok("Give a synonym of big.\nAnswer: large")["input_ids"]
    batch = collator([{"input_ids": ids}, {"input_ids": ids[:3], "labels": 4}])
    labels = batch["labels"].tolist()
    assert labels[0] == [-100] * 7 + [tok.vocab["large"], tok.eos_token_id]
    # A row without the mark is scored after its first token; padding is never scored.
    assert labels[1] == [-100, *ids[1:3], tok.eos_token_id] + [-100] * 5
    assert batch["attention_mask"].tolist()[1] == [1] * 4 + [0] * 5


def test_the_answer_starts_after_the_last_mark() -> None:
    assert answer_start([5, 7, 8, 9, 7, 8, 3], [7, 8]) == 6
    assert answer_start([5, 6], [7, 8]) is None


def test_a_row_at_max_length_keeps_its_end_token() -> None:
    collator = CompletionCollator(_Tokenizer(), max_length=4)
    tokens, _ = collator.row([5, 6, 7, 8, 9])
    assert tokens == [5, 6, 7, 1]


def test_answers_are_compared_by_their_words() -> None:
    assert exact_match(" Large. ", ["big", "large"])
    assert not exact_match("very large", ["large"])
    assert token_f1("a salt of acid", ["a salt of hydrofluoric acid"]) == pytest.approx(2 * 1.0 * 0.8 / 1.8)
    assert token_f1("", ["large"]) == 0.0


def test_a_skill_may_answer_a_little_longer_than_its_longest_answer() -> None:
    short = Instruction("antonym", "hot", "Give the antonym of 'hot'.", "cold", ("cold", "cool down"))
    long = Instruction("define", "x", "Define 'x'.", "a b", (" ".join(["word"] * 40),))
    assert answer_budget(_Tokenizer(), [short]) == 2 + 1 + 4
    assert answer_budget(_Tokenizer(), [short, long]) == MAX_NEW_TOKENS


def test_the_token_loss_ignores_unscored_positions() -> None:
    logits = torch.zeros(2, 3, 4)
    logits[0, 1, 2] = 5.0  # position 1 predicts token 2 confidently
    labels = torch.tensor([[-100, -100, 2], [-100, 1, 3]])
    rows = token_loss(logits, labels, reduction="none")
    assert rows[0] < 0.03
    assert rows[1] == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert token_loss(logits, labels) == pytest.approx(float(rows[0] + 2 * rows[1]) / 3)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"method": "lora-replay"}, "causal-lm run's 'method'"),
        ({"calibration": "weight_aligning"}, r"no classification head: drop \['calibration'\]"),
        ({"data": "x.jsonl"}, "drop 'data'"),
        ({"readouts": ["head"]}, r"drop \['readouts'\]"),
        ({"model_kind": "seq2seq"}, "'model_kind' must be one of"),
    ],
)
def test_a_causal_lm_config_refuses_what_it_cannot_run(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RunConfig(**{"model_kind": "causal-lm", "method": "random", **changes})


def test_every_causal_method_has_its_strategy() -> None:
    from rehearsal.runner.strategies.causal import CAUSAL_STRATEGIES, CausalLM, strategy_for

    assert set(CAUSAL_STRATEGIES) == set(CAUSAL_METHODS)
    for method in CAUSAL_METHODS:
        strategy = strategy_for(RunConfig(model_kind="causal-lm", method=method))
        assert isinstance(strategy, CausalLM)
        assert strategy.name == method


def test_a_classifier_run_keeps_its_config_digest(tmp_path: Path) -> None:
    from rehearsal.runner.state import comparable

    assert "model_kind" not in comparable(RunConfig())
    assert comparable(RunConfig(model_kind="causal-lm", method="naive"))["model_kind"] == "causal-lm"
