"""The learned 3D expert's network and loss: one RGB photo -> amodal occupancy on a camera-aligned frustum grid.

Two small CNNs in one module (about 3.5 M parameters at width 24, ~14 MB of safetensors):
- BoxNet reads the whole photo (downsampled to 128 px) and predicts where the object is: the image window centre
  (u0, v0), its half-size r, the depth z of the object's centre, and an objectness logit (no object -> nothing
  reconstructed).
- ShapeNet reads the photo cropped to that window (128 px) and predicts occupancy logits for n_depth x n_xy x n_xy
  frustum cells (64^3): each output pixel is one ray of the window, its channels the depth cells along that ray
  (image-aligned: x, y follow the photo; only the depth extent is inferred). A U-Net with a fully connected
  bottleneck so that it can fill in the parts the hand hides.

    model = OccupancyNet(OccupancyNetConfig())
    model.save_pretrained("out/recon")            # config.json + model.safetensors
    model = OccupancyNet.from_pretrained("out/recon")
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class OccupancyNetConfig:
    n_xy: int = 64            # frustum cells across the image window (= crop / 2)
    n_depth: int = 64         # frustum cells in depth
    crop: int = 128           # ShapeNet input size (px)
    box_input: int = 128      # BoxNet input size (px)
    image_size: int = 256     # the photo size the box is expressed in
    width: int = 24           # channel width multiplier
    head: str = "depth"       # "depth": one logit per depth cell of each ray; "intervals": two depth intervals per ray
    pad: float = 1.15         # ground-truth window = padded square 2D extent of the object
    depth_ratio: float = 1.25  # half-depth of the slab / half-width of the window at the object's depth
    z_per_focal: bool = False  # the box net's depth is for the reference focal length fx (the photo's K turns it
                               # into metres: depth_of); False: metres directly (weights trained before this option)
    fx: float = 280.0         # default intrinsics of a 256 px photo (used when reconstruct() gets no K)
    fy: float = 280.0
    cx: float = 128.0
    cy: float = 128.0

    @classmethod
    def from_dict(cls, data: dict) -> "OccupancyNetConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BoxNet(nn.Module):
    """Photo -> (u, v) window centre in [-1, 1], log(r / image_size), log z, objectness logit."""

    def __init__(self, w: int):
        super().__init__()
        self.features = nn.Sequential(
            conv(3, w // 2, 2), conv(w // 2, w, 2), conv(w, w), conv(w, 2 * w, 2), conv(2 * w, 2 * w),
            conv(2 * w, 3 * w, 2), conv(3 * w, 3 * w), conv(3 * w, 4 * w, 2),  # 128 -> 4 px
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * w * 16, 128), nn.ReLU(inplace=True), nn.Linear(128, 5))
        with torch.no_grad():
            self.head[-1].bias.copy_(torch.tensor([0.0, 0.0, math.log(0.2), math.log(0.5), 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ShapeNet(nn.Module):
    """Window crop (B, 3, crop, crop) -> occupancy logits (B, n_depth, crop / 2, crop / 2): a U-Net over the crop
    (+ 2 coordinate channels) whose output channels are the depth cells of each pixel's ray, with a fully connected
    bottleneck on the 1/16 features pooled to 4 x 4 so that it can fill in the parts the hand hides."""

    def __init__(self, w: int, n_depth: int, crop: int = 128, head: str = "depth"):
        super().__init__()
        if head not in ("depth", "intervals"):
            raise ValueError(f"head must be 'depth' or 'intervals', not {head!r}")
        self.kind, self.n_depth = head, n_depth
        self.e1 = nn.Sequential(conv(5, w, 2), conv(w, w))                    # crop / 2
        self.e2 = nn.Sequential(conv(w, 2 * w, 2), conv(2 * w, 2 * w))        # / 4
        self.e3 = nn.Sequential(conv(2 * w, 4 * w, 2), conv(4 * w, 4 * w))    # / 8
        self.e4 = nn.Sequential(conv(4 * w, 8 * w, 2), conv(8 * w, 8 * w))    # / 16
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(8 * w * 16, 256),
                                nn.ReLU(inplace=True), nn.Linear(256, 8 * w * 16), nn.ReLU(inplace=True))
        self.d3 = nn.Sequential(conv(8 * w + 4 * w, 4 * w), conv(4 * w, 4 * w))
        self.d2 = conv(4 * w + 2 * w, 2 * w)
        self.d1 = nn.Sequential(conv(2 * w + w, 2 * w), conv(2 * w, 2 * w))
        self.head = nn.Conv2d(2 * w, n_depth if head == "depth" else 6, 1)
        if head == "intervals":  # start as a centred interval of half the slab, half present
            with torch.no_grad():
                self.head.bias.copy_(torch.tensor([-0.5, math.log(1.0), 0.0, 0.0, math.log(0.3), -2.0]))
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        s1 = self.e1(torch.cat([x, xs, ys], 1))
        s2 = self.e2(s1)
        s3 = self.e3(s2)
        g = self.e4(s3)
        glob = self.fc(g).view(b, -1, 4, 4)
        g = g + F.interpolate(glob, size=g.shape[-2:], mode="nearest")
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
        y = self.d3(torch.cat([up(g), s3], 1))
        y = self.d2(torch.cat([up(y), s2], 1))
        y = self.d1(torch.cat([up(y), s1], 1))
        out = self.head(y)
        if self.kind == "depth":
            return out
        return interval_logits(out.float(), self.n_depth)


def interval_logits(params: torch.Tensor, n_depth: int, sharpness: float | None = None) -> torch.Tensor:
    """Per-ray occupancy from two depth intervals (B, 6, H, W) = (start, log length, presence logit) x 2, in the
    slab's normalized depth [-1, 1]: occupancy = 1 - (1 - p1)(1 - p2), p = presence * soft box(start, start + length)
    with edges one cell wide. Returned as logits (B, n_depth, H, W) so that the same loss and threshold apply."""
    tau = sharpness or 1.0 / n_depth
    c = ((torch.arange(n_depth, device=params.device, dtype=params.dtype) + 0.5) / n_depth * 2 - 1).view(1, -1, 1, 1)
    empty = None
    for start, log_length, presence in (params[:, 0:3].unbind(1), params[:, 3:6].unbind(1)):
        start, end = start.unsqueeze(1), (start + log_length.exp()).unsqueeze(1)
        p = torch.sigmoid(presence.unsqueeze(1)) * torch.sigmoid((c - start) / tau) * torch.sigmoid((end - c) / tau)
        empty = (1 - p) if empty is None else empty * (1 - p)
    p = (1 - empty).clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)


class OccupancyNet(nn.Module):
    """BoxNet + ShapeNet with save_pretrained / from_pretrained (config.json + model.safetensors)."""

    def __init__(self, config: OccupancyNetConfig | None = None):
        super().__init__()
        self.config = config or OccupancyNetConfig()
        if self.config.n_xy * 2 != self.config.crop:
            raise ValueError(f"n_xy ({self.config.n_xy}) must be crop / 2 ({self.config.crop} / 2): the shape net's "
                             f"output pixels are the window's rays")
        self.box_net = BoxNet(self.config.width)
        self.shape_net = ShapeNet(self.config.width, self.config.n_depth, self.config.crop, self.config.head)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] -> normalized float (B, 3, H, W)."""
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float() / 255.0
        return (images - self.mean) / self.std

    def predict_box(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized photos (B, 3, S, S) -> dict u0, v0, r (pixels of image_size), z (metres), objectness logit."""
        c = self.config
        small = F.interpolate(x, size=(c.box_input, c.box_input), mode="area") if x.shape[-1] != c.box_input else x
        out = self.box_net(small)
        half = c.image_size / 2
        return {"u0": half + half * out[:, 0], "v0": half + half * out[:, 1],
                "r": c.image_size * out[:, 2].exp(), "z": out[:, 3].exp(), "objectness": out[:, 4], "raw": out}

    def depth_of(self, z: float, fx: float) -> float:
        """The object's depth in metres from the box net's depth output z, for a photo of focal length fx (pixels)."""
        return z * fx / self.config.fx if self.config.z_per_focal else z

    def crop(self, x: torch.Tensor, u0: torch.Tensor, v0: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Crop windows [u0 - r, u0 + r] x [v0 - r, v0 + r] (pixels of image_size) to (B, 3, crop, crop)."""
        c = self.config
        scale = x.shape[-1] / c.image_size
        size = x.shape[-1]
        theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = r * scale / (size / 2)
        theta[:, 1, 1] = r * scale / (size / 2)
        theta[:, 0, 2] = u0 * scale / (size / 2) - 1
        theta[:, 1, 2] = v0 * scale / (size / 2) - 1
        grid = F.affine_grid(theta, [x.shape[0], 3, c.crop, c.crop], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor, box: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Normalized photos -> box prediction + occupancy logits (B, n_depth, n_xy, n_xy) in the window `box`
        (the predicted one when box is None; training passes the ground-truth window)."""
        pred = self.predict_box(x)
        window = box if box is not None else pred
        pred["occupancy"] = self.shape_net(self.crop(x, window["u0"], window["v0"], window["r"]))
        return pred

    def save_pretrained(self, path: str | Path, half: bool = False) -> Path:
        """config.json + model.safetensors. half: the floating-point tensors stored as float16 (half the file, as the
        shipped experts are; from_pretrained loads them back into float32)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if half:
            too_large = [k for k, v in state.items() if v.is_floating_point() and v.abs().max() > 65504]
            if too_large:
                raise ValueError(f"cannot store in float16: {too_large[0]} holds values beyond its range")
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        save_file(state, path / "model.safetensors")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> "OccupancyNet":
        from safetensors.torch import load_file

        path = Path(path)
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name}: missing (a 3D expert folder holds config.json + "
                                        f"model.safetensors, written by OccupancyNet.save_pretrained)")
        model = cls(OccupancyNetConfig.from_dict(json.loads((path / "config.json").read_text())))
        model.load_state_dict(load_file(path / "model.safetensors", device=device))
        return model.to(device).eval()


def widened(model: OccupancyNet, width: int, seed: int = 0) -> OccupancyNet:
    """A wider copy of a trained expert that computes exactly the same function (Net2Net-style): each layer's old
    channels keep their weights and come first, the new channels get fresh random incoming weights and zero outgoing
    weights, so training goes on from the trained expert with more capacity. The shape net's skip concatenations
    ([upsampled, skip]) keep each part's old channels at the start of that part."""
    old_config = model.config
    if width < old_config.width:
        raise ValueError(f"cannot narrow an expert (width {old_config.width} -> {width})")
    config = OccupancyNetConfig.from_dict({**asdict(old_config), "width": width})
    torch.manual_seed(seed)
    wide = OccupancyNet(config)
    w0, w1 = old_config.width, width
    concat = {"shape_net.d3.0.0.weight": (8, 4), "shape_net.d2.0.weight": (4, 2), "shape_net.d1.0.0.weight": (2, 1)}
    old_state = model.state_dict()
    state = wide.state_dict()
    with torch.no_grad():
        for name, new in state.items():
            old = old_state[name]
            if new.shape == old.shape:
                new.copy_(old)
                continue
            if new.dim() == 0:
                continue
            if new.dim() == 1:  # biases and BatchNorm parameters/statistics of widened outputs
                new[:old.shape[0]] = old
                continue
            outputs = slice(0, old.shape[0])
            if name in concat:  # inputs [part a | part b]: each part's old channels first
                a, b = concat[name]
                new[outputs] = 0.0
                new[outputs, :a * w0] = old[:, :a * w0]
                new[outputs, a * w1:a * w1 + b * w0] = old[:, a * w0:]
            else:
                new[outputs] = 0.0  # the old outputs read nothing from the new inputs...
                new[outputs, :old.shape[1]] = old  # ...and what they read before
    wide.load_state_dict(state)
    return wide


def occupancy_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """BCE + soft-IoU loss on occupancy logits against soft targets in [0, 1] (same shape)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    union = (p + t - p * t).sum(1).clamp_min(1e-6)
    soft_iou = 1 - (inter / union).mean()
    return {"bce": bce, "soft_iou": soft_iou}


def box_targets(u0, v0, r, z, image_size: int) -> torch.Tensor:
    """Ground-truth window -> the BoxNet's raw regression targets (B, 4)."""
    half = image_size / 2
    return torch.stack([(u0 - half) / half, (v0 - half) / half, (r / image_size).log(), z.log()], 1)


def expert_loss(pred: dict, target_occupancy: torch.Tensor, target_box: torch.Tensor, has_object: torch.Tensor,
                box_weight: float = 5.0) -> dict[str, torch.Tensor]:
    """The whole training loss: occupancy (BCE + soft IoU) on photos with an object, box regression (smooth L1)
    on photos with an object, objectness BCE on all. Returns the parts and 'loss'."""
    pos = has_object > 0.5
    parts = {}
    if pos.any():
        parts.update(occupancy_loss(pred["occupancy"][pos], target_occupancy[pos]))
        parts["box"] = F.smooth_l1_loss(pred["raw"][pos, :4], target_box[pos], beta=0.05) * box_weight
    parts["objectness"] = F.binary_cross_entropy_with_logits(pred["objectness"], has_object.float())
    parts["loss"] = sum(parts.values())
    return parts
