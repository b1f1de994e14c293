"""The configuration of one continual fine-tuning run (``rehearsal run CONFIG``), from TOML, YAML or JSON.

A minimal TOML file::

    method = "hybrid"
    loss = "asymmetric"
    max_train_per_class = 40

    [replay]
    ratio = 0.25

Unknown keys are an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from rehearsal.arithmetic import ENCODER_BACKENDS, check_bf16_setting
from rehearsal.config import (
    CALIBRATIONS,
    LOSSES,
    PREDICTOR_NAMES,
    ConfigMixin,
    EWCConfig,
    LoRAConfig,
    ReplayConfig,
    check_seed,
)
from rehearsal.errors import ConfigError
from rehearsal.governance.gate import GateConfig
from rehearsal.methods.generative.config import GenerativeConfig
from rehearsal.runner.methods import (
    CAUSAL_METHODS,
    MEMORYLESS_METHODS,
    METHODS,
    ONLINE_METHODS,
    REPLAY_METHODS,
)
from rehearsal.runner.online_config import OnlineConfig

__all__ = [
    "CAUSAL_METHODS",
    "MEMORYLESS_METHODS",
    "METHODS",
    "MODEL_KINDS",
    "POLICIES",
    "PREDICTIONS",
    "REPLAY_METHODS",
    "RunConfig",
]

# What a run trains: a sequence classifier (an encoder and a head over the stream's classes), or a causal LM
# under a LoRA adapter that learns to answer instructions (rehearsal.runner.strategies.causal).
MODEL_KINDS = ("classifier", "causal-lm")
# Admission policies a run can use (rehearsal.memory.policies names them alike; "priority" needs options
# a run config does not carry).
POLICIES = ("keep_all", "reservoir", "class_balanced")
PREDICTIONS = PREDICTOR_NAMES


def _positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = " or None" if allow_none else ""
        raise ConfigError(f"{name!r} must be a positive int{extra}, got {value!r}")


def _positive_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < float("inf"):
        raise ConfigError(f"{name!r} must be a positive number, got {value!r}")


@dataclasses.dataclass
class RunConfig(ConfigMixin):
    """What to train, how, and where the results go.

    ``method`` names a strategy (one of :data:`METHODS`). ``tasks`` selects and orders the
    bundled WordNet tasks; ``data`` instead reads a JSON-lines or CSV stream (see ``load_jsonl_stream``) whose
    ``text_field``, ``label_field`` and ``task_field`` name its columns.
    ``batch_size`` counts new examples per step; replay strategies add ``replay.ratio`` worth on top.
    ``memory_capacity`` bounds the memory for the ``reservoir`` and ``class_balanced`` policies.
    ``head_learning_rate`` (None: ``learning_rate``) is the classification head's own learning rate.
    ``calibration`` corrects the head after each phase (``rehearsal.config.CALIBRATIONS``).
    ``prediction`` is ``"head"`` (the argmax of the shared head) or a predictor over the memory, refitted
    after each phase on up to ``prediction_per_class`` memory entries per seen class (None: all) through
    the encoder's features (methods that replay only): ``"ncm"`` nearest class mean, ``"knn"`` weighted
    neighbours, ``"lda"`` shared-covariance discriminant, ``"local"`` per-query head adaptation
    (``rehearsal.methods.predictors``). The results keep the head's matrix beside the predictor's, and
    one more matrix per name in ``readouts`` (other predictors read out of the same weights).
    ``loss`` ``"separated"`` is the separated softmax (new rows over the current task's classes, replay
    rows over the old ones; ``rehearsal.replay.trainer``).
    ``ewc`` and ``lora`` configure the ``ewc*`` and ``lora*`` methods, ``generative`` the generator and
    guide of the ``generative`` method (ignored by the others).
    ``gate``, when set, must pass before each phase of a method with a memory is promoted
    (``rehearsal.governance.updates``); without it updates are versioned and audited as "ungated".
    ``model_kind`` ``"causal-lm"`` trains a causal LM (``model``: a folder; None: the packaged
    SmolLM2-135M-Instruct) under a LoRA adapter (``lora``) on the bundled instruction stream, one skill per
    task (``rehearsal.runner.instructions``; the caps count items per skill), and scores greedy answers: the
    matrix holds token-F1 (``rehearsal.runner.strategies.causal``).
    ``keep_weights`` bounds how many phases' weights a governed run keeps (None: all, so every version
    can be rolled back to in full; older versions keep their memory state but lose their weights).
    ``online`` runs the stream once in small batches, each tested before it is trained on
    (``rehearsal.runner.online``), with the settings in ``streaming`` (:class:`OnlineConfig`).
    """

    method: str = "hybrid"
    loss: str = "asymmetric"
    mask_unseen: bool = False
    tasks: list[str] | None = None
    data: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    task_field: str = "task"
    max_train_per_class: int | None = 40
    max_test_per_class: int | None = 20
    model: str | None = None
    model_kind: str = "classifier"
    epochs: float = 1.0
    batch_size: int = 24
    eval_batch_size: int = 64
    learning_rate: float = 1e-4
    head_learning_rate: float | None = None
    # A training batch runs as this many forward passes over rows of similar length, each padded only to
    # its own longest row: the same loss and gradient (up to float rounding and dropout's draws) for
    # fewer padded tokens (rehearsal.methods.length_buckets; benchmarks/RESULTS.md, issue 30).
    length_buckets: int = 2
    # Evaluation and predictor features batch texts sorted by length (less padding, the same predictions
    # up to float rounding); false keeps the given order, the reference path the tests compare against.
    length_sorted_eval: bool = True
    # Each training step's forward pass under bf16 autocast (weights and optimiser stay fp32; evaluation
    # and predictor features stay fp32). Pays on CPUs with native bf16 (AVX-512 BF16, AMX); "auto" turns it
    # on there only. Off by default: it changes the arithmetic, so such a run is not the fp32 run
    # (benchmarks/RESULTS.md, issue 30).
    bf16_training: bool | str = False
    # The arithmetic of the encoder that embeds the run's memory (rehearsal.embedding: fp32, the
    # reference; bf16; int8 through ONNX Runtime; auto). It moves replay's neighbours, not the model's
    # training; the memory records it and a resumed run keeps it.
    encoder_backend: str = "fp32"
    # Evaluation and the predictor's features under bf16 autocast on the CPU (training stays fp32): faster
    # where the CPU has native bf16 (AVX-512 BF16, AMX; "auto": there only), and a few labels change
    # (benchmarks/RESULTS.md, issue 30), so it is off by default.
    bf16_eval: bool | str = False
    calibration: str = "none"
    prediction: str = "head"
    # None: the predictor is fitted on the whole memory after each phase (one forward pass over it). The
    # shared-covariance lda needs it: 50 entries per class scored 2.1 points of ACC under the whole memory
    # on WordNet and 2.1 on sentiment (benchmarks/RESULTS.md, "Predictors over the memory").
    prediction_per_class: int | None = None
    readouts: list[str] = dataclasses.field(default_factory=list)
    max_length: int = 64
    seed: int = 0
    policy: str = "keep_all"
    memory_capacity: int | None = None
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    ewc: EWCConfig = dataclasses.field(default_factory=EWCConfig)
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    generative: GenerativeConfig = dataclasses.field(default_factory=GenerativeConfig)
    gate: GateConfig | None = None
    keep_weights: int | None = None
    output_dir: str = "runs/default"
    progress: bool = True
    online: bool = False
    streaming: OnlineConfig = dataclasses.field(default_factory=OnlineConfig)

    @property
    def keeps_memory(self) -> bool:
        """Whether the method keeps a memory (an encrypted one, which needs a master key)."""
        return self.method not in MEMORYLESS_METHODS

    def __post_init__(self) -> None:
        sections = (("replay", ReplayConfig), ("ewc", EWCConfig), ("lora", LoRAConfig))
        for name, kind in (*sections, ("generative", GenerativeConfig), ("streaming", OnlineConfig)):
            section = getattr(self, name)
            if isinstance(section, dict):
                setattr(self, name, kind.from_dict(section))
            elif not isinstance(section, kind):
                raise ConfigError(f"{name!r} must be a table of {kind.__name__} fields, got {section!r}")
        if isinstance(self.gate, dict):
            self.gate = GateConfig.from_dict(self.gate)
        if self.gate is not None and not isinstance(self.gate, GateConfig):
            raise ConfigError(f"'gate' must be a table of GateConfig fields or absent, got {self.gate!r}")
        if self.model_kind != "causal-lm" and self.method not in METHODS:
            raise ConfigError(f"'method' must be one of {sorted(METHODS)}, got {self.method!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"'loss' must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.policy not in POLICIES:
            raise ConfigError(f"'policy' must be one of {list(POLICIES)}, got {self.policy!r}")
        if self.policy != "keep_all" and self.memory_capacity is None:
            raise ConfigError(f"policy {self.policy!r} needs 'memory_capacity'")
        for name in ("batch_size", "eval_batch_size", "max_length", "length_buckets"):
            _positive_int(name, getattr(self, name))
        for name in ("max_train_per_class", "max_test_per_class", "memory_capacity", "keep_weights"):
            _positive_int(name, getattr(self, name), allow_none=True)
        check_seed(self.seed)
        _positive_number("epochs", self.epochs)
        _positive_number("learning_rate", self.learning_rate)
        if self.head_learning_rate is not None:
            _positive_number("head_learning_rate", self.head_learning_rate)
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"'calibration' must be one of {list(CALIBRATIONS)}, got {self.calibration!r}")
        if self.prediction not in PREDICTIONS:
            raise ConfigError(f"'prediction' must be one of {list(PREDICTIONS)}, got {self.prediction!r}")
        if self.prediction != "head" and self.method not in REPLAY_METHODS:
            raise ConfigError(
                f"prediction {self.prediction!r} is fitted on a replay memory; "
                f"method {self.method!r} keeps none"
            )
        _positive_int("prediction_per_class", self.prediction_per_class, allow_none=True)
        self._check_readouts()
        tasks = self.tasks
        names_ok = isinstance(tasks, list) and bool(tasks) and all(isinstance(t, str) for t in tasks)
        if tasks is not None and not names_ok:
            raise ConfigError(f"'tasks' must be a non-empty list of task names or None, got {self.tasks!r}")
        for name in ("text_field", "label_field", "task_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name!r} must be a non-empty field name, got {value!r}")
        if isinstance(self.output_dir, os.PathLike):
            self.output_dir = os.fspath(self.output_dir)  # a Path is fine; a config file holds the string
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            raise ConfigError(f"'output_dir' must be a non-empty path string, got {self.output_dir!r}")
        if self.encoder_backend not in ENCODER_BACKENDS:
            raise ConfigError(
                f"'encoder_backend' must be one of {list(ENCODER_BACKENDS)}, got {self.encoder_backend!r}"
            )
        for name in ("bf16_training", "bf16_eval"):
            check_bf16_setting(name, getattr(self, name))
        for name in ("mask_unseen", "progress", "online", "length_sorted_eval"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name!r} must be true or false, got {getattr(self, name)!r}")
        if self.online:
            self._check_online()
        if self.model_kind not in MODEL_KINDS:
            raise ConfigError(f"'model_kind' must be one of {list(MODEL_KINDS)}, got {self.model_kind!r}")
        if self.model_kind == "causal-lm":
            self._check_causal()

    def _check_causal(self) -> None:
        """A causal-LM run trains a LoRA adapter on the bundled instruction stream and scores answers: the
        settings of a classifier's head do not apply, and naming one is a mistake worth a message."""
        if self.method not in CAUSAL_METHODS:
            raise ConfigError(
                f"a causal-lm run's 'method' must be one of {list(CAUSAL_METHODS)}, got {self.method!r}"
            )
        if self.data is not None:
            raise ConfigError("a causal-lm run trains on the bundled instruction stream; drop 'data'")
        head_settings = {
            "prediction": self.prediction != "head",
            "calibration": self.calibration != "none",
            "head_learning_rate": self.head_learning_rate is not None,
            "mask_unseen": self.mask_unseen,
            "online": self.online,
            "readouts": bool(self.readouts),
        }
        named = [name for name, set_ in head_settings.items() if set_]
        if named:
            raise ConfigError(f"a causal-lm run has no classification head: drop {named}")

    def _check_online(self) -> None:
        if self.method not in ONLINE_METHODS:
            raise ConfigError(
                f"an online run's 'method' must be one of {list(ONLINE_METHODS)}, got {self.method!r}"
            )
        if self.gate is not None:
            raise ConfigError("an online run is not gated: drop 'gate'")
        if self.prediction != "head":
            if self.method not in REPLAY_METHODS:
                raise ConfigError(
                    f"'prediction' {self.prediction!r} predicts through the memory; method {self.method!r}"
                    " keeps none (use a replay method, or prediction = 'head')"
                )
            s = self.streaming
            if s.checkpoint_every % s.refit_every:
                raise ConfigError(
                    f"'streaming.checkpoint_every' ({s.checkpoint_every}) must be a multiple of "
                    f"'streaming.refit_every' ({s.refit_every}), so a resumed run refits where it stopped"
                )

    def _check_readouts(self) -> None:
        readouts = self.readouts
        if not isinstance(readouts, list) or not all(isinstance(r, str) for r in readouts):
            raise ConfigError(f"'readouts' must be a list of predictor names, got {readouts!r}")
        unknown = [r for r in readouts if r not in PREDICTIONS]
        if unknown:
            raise ConfigError(f"'readouts' names unknown predictors {unknown}; known: {list(PREDICTIONS)}")
        if any(r != "head" for r in readouts) and self.method not in REPLAY_METHODS:
            raise ConfigError(
                f"'readouts' other than 'head' need a replay memory; method {self.method!r} keeps none"
            )

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RunConfig:
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file."""
        file = Path(path)
        suffix = file.suffix.lower()
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read run config {str(file)!r}: {exc.strerror}") from None
        try:
            if suffix == ".toml":
                if sys.version_info >= (3, 11):
                    import tomllib
                else:  # pragma: no cover
                    import tomli as tomllib
                data: Any = tomllib.loads(raw.decode("utf-8"))
            elif suffix in (".yaml", ".yml"):
                data = _load_yaml(raw.decode("utf-8"))
            elif suffix == ".json":
                data = json.loads(raw)
            else:
                raise ConfigError(f"run config {str(file)!r} must end in .toml, .yaml, .yml or .json")
        except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
            raise ConfigError(f"cannot parse run config {str(file)!r}: {exc}") from None
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ConfigError(f"run config {str(file)!r} must hold a table of settings, got {kind}")
        return cls.from_dict(data)


def _load_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        raise ConfigError("reading YAML needs PyYAML (pip install pyyaml)") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
