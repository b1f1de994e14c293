"""Replay in training: the selector, the collator and callback for the HF Trainer, and the trainer hook."""
