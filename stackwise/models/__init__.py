"""Model builders: transformer layers, attention variants, PEER, BitNet, LoRA (issue #3).

Modules here take plain arguments (`d_model=768`), never a config object; `models/builders.py` will
translate a `ModelConfig` into them. Nothing is built yet: `stackwise.config.support` lists every model
setting as planned, and `stackwise train` refuses configs that set one.
"""
