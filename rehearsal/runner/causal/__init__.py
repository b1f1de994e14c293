"""Continual instruction tuning of a causal LM in a run (``model_kind = "causal-lm"``): the base model with
a LoRA adapter, an answer-only language-modelling collator, and the evaluation of skills by greedy answers.

    model.py      the base causal LM (the packaged SmolLM2 or a folder) and its LoRA adapter, saved per phase
    collator.py   CompletionCollator: token labels on the answer only, an end-of-text token after it
    evaluate.py   greedy answers scored by exact match and token-F1, answer loss, general-text perplexity
"""
