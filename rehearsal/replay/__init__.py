"""Replay in training: the selector and its modes (one class per mode, ``modes/``), the collator and callback
for the HF Trainer, and the trainer hook."""
