"""The README's usage example runs as written."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README has no python example"
    namespace = {}
    torch.manual_seed(0)
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["layer"].self_attn.__class__.__name__ == "HardKumaAttention"
    assert torch.isfinite(namespace["loss"])
    assert namespace["x"].grad is None and any(p.grad is not None for p in namespace["layer"].parameters())
