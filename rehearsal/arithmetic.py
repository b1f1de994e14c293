"""The arithmetic a model runs in on this machine: fp32 (the reference), bf16, int8.

Light on purpose (no torch): configs validate their arithmetic settings with it, and the encoder and the
training core decide with it. bf16 autocast pays only on CPUs that compute bf16 natively (AVX-512 BF16,
AMX); elsewhere it is slower than fp32, so ``"auto"`` settings turn it on only there.
"""

from __future__ import annotations

from rehearsal.errors import ConfigError

__all__ = [
    "ENCODER_BACKENDS",
    "check_bf16_setting",
    "cpu_has_native_bf16",
    "resolve_backend",
    "wants_bf16",
]

# The arithmetic an encoder can run in (``auto``: bf16 where native, else fp32; never int8 or openvino,
# which need packages of their own): torch fp32, torch bf16 autocast, int8 under ONNX Runtime, OpenVINO's
# CPU runtime (bf16 where native).
ENCODER_BACKENDS = ("fp32", "bf16", "int8", "openvino", "auto")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): where bf16 autocast pays."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_bf16_setting(name: str, value: object) -> None:
    """A bf16 switch of a config (``bf16_training``, ``bf16_eval``) is true, false or ``"auto"``."""
    if value is not True and value is not False and value != "auto":
        raise ConfigError(f'{name!r} must be true, false or "auto", got {value!r}')


def wants_bf16(setting: bool | str) -> bool:
    """Whether a bf16 switch is on here: true, or ``"auto"`` on a CPU with native bf16 (where it pays;
    elsewhere bf16 autocast is slower than fp32)."""
    return setting is True or (setting == "auto" and cpu_has_native_bf16())


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """``fp32``, ``bf16`` or ``int8`` for the ``backend`` asked for (``auto`` decided for this machine:
    it never picks int8, whose neighbours move more than bf16's, nor openvino, an optional package)."""
    if backend not in ENCODER_BACKENDS:
        raise ConfigError(f"encoder backend must be one of {list(ENCODER_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "bf16" if device.startswith("cuda") or cpu_has_native_bf16() else "fp32"
    return backend
