"""Generative replay: a class-conditional causal LM writes examples of old classes when their text may not
be kept; the embedding-only memory guides which generations are replayed; a memorisation check counts what
the generator copies. See ``rehearsal.methods.generative.generator`` for the whole cycle."""
