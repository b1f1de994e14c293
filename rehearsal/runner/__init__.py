"""A continual fine-tuning run from a config: task streams, the loop, strategies, metrics and plots."""
