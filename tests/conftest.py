"""Test session set-up: Triton kernels run under the interpreter where there is no CUDA GPU.

`triton.jit` reads TRITON_INTERPRET when a kernel module is imported, so it is set before any test runs.
On a GPU machine the kernels compile for the GPU; set TRITON_INTERPRET=1 there to test the interpreter path.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
