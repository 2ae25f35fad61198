import os

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when fastrnn.kernels is first
# imported. conftest.py is imported before any test module, so setting it here (unless the caller
# chose otherwise) makes every Triton kernel run on CPU tensors through the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Backends the module-level tests run on. "triton" runs its kernels through the interpreter here.
MODULE_BACKENDS = ["reference", "aten", "triton"]


@pytest.fixture(params=MODULE_BACKENDS)
def backend(request):
    return request.param
