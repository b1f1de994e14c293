"""Continual-learning methods that act on the model: EWC, LoRA adapters, routing, head calibration."""
