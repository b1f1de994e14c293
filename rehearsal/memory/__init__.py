"""RehearsalMemory (the facade over the store protocols), input checks, and admission policies."""
