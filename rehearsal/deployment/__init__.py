"""A deployment: a folder holding a model's versions, its memory, its regression suite and its audit log,
updated from new labelled data one governed update at a time (``rehearsal update``)."""
