"""What fine-tuning and the training suite share: device and precision (:mod:`.device`),
memory figures (:mod:`.memory`), optimizers and learning-rate schedules (:mod:`.optim`), the one
gradient step (:mod:`.step`) and energy buckets (:mod:`.energy`).

Nothing here knows about tasks, corpora or records of a particular scenario.
"""
