"""The training engine: data pipeline, objectives, optimisers, stage schedules, checkpoints (issues #4, #5).

Nothing is built yet: `stackwise.config.support` lists every training setting as planned.
"""
