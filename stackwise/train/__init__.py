"""The training engine: data pipeline, tokenizers, objectives, optimisers, checkpoints, generation.

`stackwise.train.trainer.Trainer` is the engine behind `stackwise train`; modules import torch, so this
package is imported only when training, never by `import stackwise`.
"""
