"""A deployment version as a model that answers requests: load, predict (with routing), time, save.

The base classifier has ``config.max_labels`` outputs; a version predicts over the labels it knows
(``VersionState.labels``). ``adapter-replay`` keeps one LoRA adapter ``shared``; ``expert-growth`` keeps
one adapter per expert and routes each input by the k-NN vote of the memory's ``task`` metadata to the
expert of the winning task (or by a fitted probe, router "probe"), which predicts among its tasks'
labels; ``ewc`` is the whole model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.deployment.answers import MemoryAnswers, head_answers
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.folder import VersionState
from rehearsal.deployment.strategies import SHARED, get_deployment_strategy
from rehearsal.embedding import default_model_path
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.adapters import TaskAdapters, sequence_lora_config
from rehearsal.methods.inference import embed_texts
from rehearsal.methods.router import AdapterRouter, group_by_route
from rehearsal.methods.task_probe import TaskProbe

__all__ = ["DeployedModel", "base_path"]


def base_path(config: DeploymentConfig) -> str:
    return str(config.model or default_model_path())


class DeployedModel:
    """One version's model, its tokenizer and state."""

    def __init__(
        self,
        config: DeploymentConfig,
        state: VersionState,
        model: Any,
        tokenizer: Any,
        adapters: TaskAdapters | None,
    ) -> None:
        self.config = config
        self.state = state
        self.model = model
        self.tokenizer = tokenizer
        self.adapters = adapters
        self.memory_answers = (
            None
            if config.prediction == "head"
            else MemoryAnswers(config.prediction, config.prediction_per_class, config.seed)
        )

    @classmethod
    def load(cls, config: DeploymentConfig, state: VersionState, weights: Path | None) -> DeployedModel:
        """The model saved in ``weights`` (None: the untrained base model of a new deployment)."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = base_path(config)
        tokenizer = AutoTokenizer.from_pretrained(source)
        whole = get_deployment_strategy(config.strategy).trains_whole_model
        if whole and weights is not None:
            model = AutoModelForSequenceClassification.from_pretrained(weights)
            return cls(config, state, model, tokenizer, None)
        # The base head is replaced by a max_labels head; seeded so a base loads the same every time.
        torch.manual_seed(config.seed)
        base = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=config.max_labels, ignore_mismatched_sizes=True
        )
        if whole:
            return cls(config, state, base, tokenizer, None)
        if weights is None:
            return cls(
                config, state, base, tokenizer, TaskAdapters(base, sequence_lora_config(base, config.lora))
            )
        adapters = TaskAdapters.load(base, weights, lora_config=sequence_lora_config(base, config.lora))
        return cls(config, state, adapters.model, tokenizer, adapters)

    def save(self, folder: Path) -> None:
        """Write the weights and the state into ``folder`` (a new folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.adapters is not None:
            self.adapters.save(folder)
        else:
            self.model.save_pretrained(folder)
        self.state.save(folder)

    # -- training setup ---------------------------------------------------------------------------
    def trainable(self, adapter: str | None) -> Any:
        """The module the update trains: the whole model, or ``adapter`` (created if new) alone."""
        if self.adapters is None or adapter is None:
            return self.model
        if adapter not in self.adapters.adapters:
            self.adapters.add_task(adapter)
        self.adapters.activate(adapter)
        self.model = self.adapters.model
        return self.model

    # -- answering --------------------------------------------------------------------------------
    def routes(self, texts: Sequence[str], memory: RehearsalMemory | None) -> list[str | None]:
        """Expert growth: the expert each text goes to (None for the other strategies)."""
        experts = self.state.experts
        if not experts:
            return [None] * len(texts)
        if len(experts) == 1 or memory is None:
            return [next(iter(experts))] * len(texts)
        vectors = embed_texts(list(texts), memory.encoder)
        if self.state.router is not None:
            return [str(e) for e in TaskProbe.from_dict(self.state.router).predict(vectors)]
        # Votes count per expert: an expert's tasks pool their neighbours against a newer expert's.
        groups = {t: e for e, ts in experts.items() for t in ts}
        router = AdapterRouter(
            memory, k=self.config.route_k, threshold=0.0, fallback="-", tasks=set(experts), groups=groups
        )
        first = next(iter(experts))
        routed = router.route(vectors)
        return [e if e in experts else first for e in routed]

    def fit_router(self, memory: RehearsalMemory) -> None:
        """Router "probe": fit the version's probe on the memory as it will be deployed with, at most
        ``probe_per_task`` entries of each task an expert holds (the first ones: a stable sample)."""
        experts = self.state.experts
        if self.config.router != "probe" or len(experts) < 2:
            self.state.router = None
            return
        if memory.embedding_only:
            raise ConfigError("router 'probe' learns from the memory's texts; this memory is embedding-only")
        groups = memory.group_ids("task")
        ids, names = [], []
        for expert, tasks in experts.items():
            for task in tasks:
                chosen = sorted(groups.get(task, []))[: self.config.probe_per_task]
                ids += chosen
                names += [expert] * len(chosen)
        vectors = embed_texts(memory.get_texts(ids), memory.encoder)
        self.state.router = TaskProbe.fit(vectors, names, seed=self.config.seed).to_dict()

    def predict(self, texts: Sequence[str], memory: RehearsalMemory | None = None) -> list[str]:
        """The label each text gets (among the labels this version knows)."""
        return self.predict_scored(texts, memory)[0]

    def predict_scored(
        self, texts: Sequence[str], memory: RehearsalMemory | None = None
    ) -> tuple[list[str], list[float]]:
        """(labels, scores): each text's label and its score (the head: its probability among the
        version's labels; a memory predictor: that predictor's score, ``rehearsal.methods.predictors``)."""
        if not len(texts):
            return [], []
        out = np.empty(len(texts), dtype=np.int64)
        scores = np.empty(len(texts), dtype=np.float64)
        routes = self.routes(texts, memory)
        for expert, rows in group_by_route([r or "" for r in routes]).items():
            if expert and self.adapters is not None:
                self.adapters.activate(expert, trainable=False)
                labels = sorted({lab for t in self.state.experts[expert] for lab in self.state.tasks[t]})
            else:
                if self.adapters is not None:
                    self.adapters.activate(SHARED, trainable=False)
                labels = list(self.state.labels)
            out[rows], scores[rows] = self._answer([texts[i] for i in rows], labels, memory, expert or SHARED)
        return [self.state.labels[int(i)] for i in out], scores.tolist()

    def _answer(
        self, texts: list[str], labels: list[str], memory: RehearsalMemory | None, route: str
    ) -> tuple[np.ndarray, np.ndarray]:
        sizes = {"batch_size": self.config.eval_batch_size, "max_length": self.config.max_length}
        ids = self.state.label_ids(labels)
        if self.memory_answers is not None and memory is not None and not memory.embedding_only:
            answered = self.memory_answers.answer(
                self.model, self.tokenizer, texts, dict(zip(labels, ids, strict=True)), memory, route, **sizes
            )
            if answered is not None:
                return answered
        return head_answers(self.model, self.tokenizer, texts, ids, **sizes)

    def timed_predict(
        self, texts: Sequence[str], memory: RehearsalMemory | None = None
    ) -> tuple[list[str], list[float]]:
        """Predictions one request at a time, as a server answers them, with each one's latency (ms)."""
        answers, latencies = [], []
        for text in texts:
            started = time.perf_counter()
            answers.extend(self.predict([text], memory))
            latencies.append((time.perf_counter() - started) * 1000.0)
        return answers, latencies
