"""A tiny deterministic TorchScript module + safetensors reference for the Rust foundation test.

selftest.ts:  forward(input f32 [3, 16]) -> output f32 [3, 8]
              pair(input)               -> (output f32 [3, 8], output2 f32 [3])
selftest_ref.safetensors: "input", "output", "output2".
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .common import atomic_path, quiet_warnings, write_parity_reference


class SelfTestNet(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        self.linear = nn.Linear(16, 8)
        self.norm = nn.LayerNorm(8)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(8, 16, generator=g) * 0.3)
            self.linear.bias.copy_(torch.randn(8, generator=g) * 0.1)
            self.norm.weight.copy_(1.0 + 0.1 * torch.randn(8, generator=g))
            self.norm.bias.copy_(0.1 * torch.randn(8, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.nn.functional.gelu(self.linear(x)))

    def pair(self, x: torch.Tensor):
        y = self.forward(x)
        return y, (y * y).sum(-1)


def run_selftest(out: Path, log=print) -> dict:
    quiet_warnings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net = SelfTestNet().eval()
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        traced = torch.jit.trace_module(net, {"forward": (x,), "pair": (x,)})
        with atomic_path(out / "selftest.ts") as tmp:
            torch.jit.save(traced, str(tmp))
        loaded = torch.jit.load(str(out / "selftest.ts"))
        y = net(x)
        y1, y2 = net.pair(x)
        ly = loaded(x)
        l1, l2 = loaded.pair(x)
    diff = max(float((ly - y).abs().max()), float((l1 - y1).abs().max()), float((l2 - y2).abs().max()))
    write_parity_reference(out / "selftest_ref.safetensors", {"input": x, "output": y, "output2": y2})
    log(f"  selftest: wrote {out / 'selftest.ts'} and {out / 'selftest_ref.safetensors'}; reload max |diff| = {diff:.3g}")
    return {"reload_max_abs_diff": diff}
