"""The training core that a run's phases (``rehearsal.runner``) and a deployment's updates
(``rehearsal.deployment``) both train through: the Trainer set up one way, and EWC's consolidation."""
