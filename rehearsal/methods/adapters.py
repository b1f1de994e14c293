"""One LoRA adapter per task (through peft), weighted merges of adapters, and routing by the memory.

Each task trains its own adapter on a frozen base model, so learning a task cannot overwrite another
task's weights; the cost moves to inference, which must pick the adapter. The memory is that gate (a
mixture of experts whose router is a k-NN index): an input's nearest memories vote for their ``task``
metadata, weighted by similarity; a winner with less than ``threshold`` of the vote is not trusted and the
input goes to a fallback adapter, typically a merge of every task's adapter::

    adapters = TaskAdapters(base_model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    for task in tasks:
        adapters.add_task(task.name)            # new adapter, the only trainable one
        Trainer(adapters.model, ...).train()
    adapters.merge(adapters.tasks, name="merged")
    adapters.save("run/adapters")

    router = AdapterRouter(memory, k=16, threshold=0.6, fallback="merged")
    for name, rows in group_by_route(router.route(vectors)).items():
        adapters.activate(name, trainable=False)  # then run the model on those rows
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rehearsal._files import write_json
from rehearsal.config import LoRAConfig
from rehearsal.errors import ConfigError, NotFoundError, StoreFormatError, ValidationError

__all__ = ["AdapterRouter", "TaskAdapters", "adapter_of", "group_by_route", "sequence_lora_config"]

# Routing lives in rehearsal.methods.router; these two names stay importable from here for older code.
from rehearsal.methods.router import AdapterRouter, group_by_route

# Attention projections adapted by default, by model family (the first family whose names occur wins).
_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn",))


def sequence_lora_config(model: Any, lora: LoRAConfig) -> Any:
    """peft ``LoraConfig`` for sequence classification: ``lora`` on the model's attention projections,
    with the classification head trained and saved per adapter (``modules_to_save``)."""
    from peft import LoraConfig, TaskType

    from rehearsal.methods.calibration import classification_head

    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = lora.target_modules
    if targets is None:
        targets = next((list(t) for t in _TARGETS if set(t) <= leaves), None)
        if targets is None:
            raise ConfigError(
                f"cannot tell the attention projections of {type(model).__name__}; set lora.target_modules"
            )
    head = classification_head(model)
    head_name = next(name for name, module in model.named_modules() if module is head)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=[head_name.rsplit(".", 1)[-1]],
    )


_MANIFEST = "adapters.json"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
# Module names under which peft keeps one sub-module per adapter: the segment after them is the adapter.
_PER_ADAPTER = frozenset(
    {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "modules_to_save"}
)
COMBINATIONS = ("cat", "linear", "svd")


def adapter_of(parameter_name: str) -> str | None:
    """The adapter a peft parameter belongs to (``...lora_A.verbs.weight`` -> ``"verbs"``), else None."""
    parts = parameter_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in _PER_ADAPTER:
            return parts[i + 1]
    return None


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - peft is a dependency
        raise ConfigError("per-task adapters need peft (pip install peft)") from exc
    return peft


class TaskAdapters:
    """A peft model holding one LoRA adapter per task plus any merged adapters (see the module docstring).

    ``model`` is the base model (it is wrapped on the first :meth:`add_task`) or a ``PeftModel``.
    """

    def __init__(self, model: Any, lora_config: Any) -> None:
        peft = _peft()
        self.lora_config = lora_config
        self._peft_model: Any = model if isinstance(model, peft.PeftModel) else None
        self._base = model
        self.tasks: list[str] = []
        self.merged: dict[str, dict[str, Any]] = {}  # name -> {"tasks", "weights", "combination"}

    @property
    def model(self) -> Any:
        """The ``PeftModel`` to train or run (after the first :meth:`add_task`)."""
        if self._peft_model is None:
            raise ValidationError("no adapter yet: call add_task(name) first")
        return self._peft_model

    @property
    def adapters(self) -> list[str]:
        """Every adapter, tasks first then merges, in the order they were added."""
        return [*self.tasks, *self.merged]

    @property
    def active(self) -> str:
        return str(self.model.active_adapter)

    def _check_new_name(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationError(
                f"adapter name must match {_NAME.pattern} (it becomes a module and folder name), got {name!r}"
            )
        if name in self.adapters:
            raise ValidationError(f"adapter {name!r} already exists; adapters are {self.adapters}")

    def add_task(self, name: str) -> None:
        """Add a fresh LoRA adapter for task ``name`` and make it the only trainable one."""
        self._check_new_name(name)
        config = copy.deepcopy(self.lora_config)
        if self._peft_model is None:
            self._peft_model = _peft().get_peft_model(self._base, config, adapter_name=name)
        else:
            self._peft_model.add_adapter(name, config)
        self.tasks.append(name)
        self.activate(name)

    def activate(self, name: str, *, trainable: bool = True) -> None:
        """Make ``name`` the active adapter; with ``trainable`` its weights and no other adapter's train,
        otherwise every adapter is frozen (inference)."""
        if name not in self.adapters:
            raise NotFoundError(f"unknown adapter {name!r}; adapters are {self.adapters}")
        model = self.model
        model.set_adapter(name, inference_mode=not trainable)
        others = [a for a in self.adapters if a != name]
        if others:
            model.set_requires_grad(others, requires_grad=False)
        wanted = {name} if trainable else set()
        if self.trainable_adapters() != wanted:
            raise ValidationError(
                f"after activating {name!r} the trainable adapters are {sorted(self.trainable_adapters())}"
            )

    def trainable_adapters(self) -> set[str]:
        """Adapters with at least one parameter that requires grad."""
        return {
            adapter
            for pname, p in self.model.named_parameters()
            if p.requires_grad and (adapter := adapter_of(pname)) is not None
        }

    def merge(
        self,
        names: Sequence[str],
        weights: Sequence[float] | None = None,
        *,
        name: str = "merged",
        combination: str = "cat",
    ) -> None:
        """Add adapter ``name`` = weighted combination of ``names`` (peft's ``add_weighted_adapter``).

        ``"cat"`` (default) concatenates the LoRA factors, so the merged update is exactly
        ``sum_j w_j B_j A_j`` at rank ``sum_j r_j``; ``"linear"`` averages A and B separately (same rank,
        not the average of the updates); ``"svd"`` truncates the exact sum back to rank ``r``.
        Equal weights by default. The active adapter is left unchanged.
        """
        names = list(names)
        if not names or any(n not in self.tasks for n in names):
            raise ValidationError(f"merge needs names among the task adapters {self.tasks}, got {names}")
        if combination not in COMBINATIONS:
            raise ConfigError(f"'combination' must be one of {list(COMBINATIONS)}, got {combination!r}")
        w = [1.0 / len(names)] * len(names) if weights is None else [float(x) for x in weights]
        if len(w) != len(names):
            raise ValidationError(f"merge got {len(names)} adapters but {len(w)} weights")
        self._check_new_name(name)
        active = self.active
        trainable = self.trainable_adapters()
        self.model.base_model.add_weighted_adapter(names, w, name, combination_type=combination)
        self.merged[name] = {"tasks": names, "weights": w, "combination": combination}
        self.activate(active, trainable=active in trainable)

    def remove(self, name: str) -> None:
        """Delete adapter ``name`` (e.g. a stale merge before re-merging); the active one cannot go."""
        if name not in self.adapters:
            raise NotFoundError(f"unknown adapter {name!r}; adapters are {self.adapters}")
        if name == self.active:
            raise ValidationError(f"adapter {name!r} is active; activate another before removing it")
        self.model.delete_adapter(name)
        if name in self.merged:
            del self.merged[name]
        else:
            self.tasks.remove(name)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write every adapter (``folder/<name>/``, peft's format) and ``adapters.json`` naming them."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        if "default" in self.adapters:
            raise ValidationError("an adapter named 'default' would be saved at the folder root by peft")
        self.model.save_pretrained(str(out), selected_adapters=self.adapters)
        manifest = {"format": 1, "tasks": self.tasks, "merged": self.merged, "active": self.active}
        write_json(out / _MANIFEST, manifest)

    @classmethod
    def load(cls, model: Any, folder: str | os.PathLike[str], *, lora_config: Any = None) -> TaskAdapters:
        """Put the adapters saved in ``folder`` on base ``model`` (trainable, the saved active one active).

        ``lora_config`` is the config of tasks added later (default: the first saved adapter's)."""
        peft = _peft()
        src = Path(folder)
        try:
            manifest = json.loads((src / _MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreFormatError(f"{str(src)!r} holds no readable {_MANIFEST}: {exc}") from exc
        names = [*manifest.get("tasks", []), *manifest.get("merged", {})]
        if not names:
            raise StoreFormatError(f"{str(src / _MANIFEST)!r} names no adapters")
        missing = [n for n in names if not (src / n).is_dir()]
        if missing:
            raise StoreFormatError(f"{str(src)!r} lacks the folders of adapters {missing}")
        first, *rest = names
        peft_model = peft.PeftModel.from_pretrained(
            model, str(src / first), adapter_name=first, is_trainable=True
        )
        for name in rest:
            peft_model.load_adapter(str(src / name), adapter_name=name, is_trainable=True)
        adapters = cls(peft_model, lora_config or copy.deepcopy(peft_model.peft_config[first]))
        adapters.tasks = list(manifest.get("tasks", []))
        adapters.merged = dict(manifest.get("merged", {}))
        adapters.activate(str(manifest.get("active", first)))
        return adapters
