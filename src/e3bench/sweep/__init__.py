"""Sweeps: expand a YAML grid into run configs (:mod:`.plan`), run them with an executor (:mod:`.executors`), keep each record by one rule (:mod:`.finish`)."""
