#!/usr/bin/python3
"""Writes the golden files of tests/test_golden.c: one whole training step of
a small vgg4 computed by PyTorch (autograd, float64), for the C library to
match.

Each case builds the network of src/model.c in torch (3x3 conv without bias,
BatchNorm2d, ReLU, 2x2 max-pool after the first three blocks, global average
pool, optional parameter-free BatchNorm1d, linear head, logit scale), fills it
with fixed random values, and runs the trainer's step (src/train.c) on a
fixed batch of clean and "augmented" images (plain arrays, no augmentation
code): one forward of all views, EM pseudo-labels from the clean view,
every loss term, backward with y fixed, one AdamW step written out by hand.

The reference runs in float64 on float32 starting values, so what it stores
is the exact answer to the C code's float32 question up to float64 rounding;
tensors are stored as F32 (the tolerances are far above that rounding),
loss terms as F64. The case's settings go into the file's metadata under the
config keys of src/config.c, so the C test builds its config from the file.

Not here: the C side (tests/test_golden.c); ecl is not imported.
Run with Debian's python3-torch: make golden (or /usr/bin/python3 this file).
"""
import json
import os
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("make_golden: torch or numpy missing; install with: "
             "apt-get install -y python3-torch python3-numpy, and run with /usr/bin/python3")

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
EM_FLOOR = 1e-30        # src/em.c's floor on y and ybar

# Two cases: the trainer's default recipe on MNIST-like input, and an RGB
# case with odd sizes (20 -> 10 -> 5 -> 2: the floor of the pool), two views,
# no head BN, the symmetric KL, and an Adam eps and lr large enough that the
# eps placement and the bias corrections change the stored result.
CASES = [
    dict(file="vgg4_step.safetensors", seed=1, cin=1, h=16, w=16, width=8, k=5, b=6,
         views=1, head_bn=True, logit_scale=0.5, lam=100.0, gamma=0.01, alpha=1.0,
         aug_form="kl", forward_ce=0.2, y_eps=1e-12, em_iters=15, lr=1e-3, beta1=0.9,
         beta2=0.999, eps=1e-8, weight_decay=0.01),
    dict(file="vgg4_step_rgb.safetensors", seed=2, cin=3, h=20, w=20, width=4, k=3, b=5,
         views=2, head_bn=False, logit_scale=1.0, lam=100.0, gamma=0.05, alpha=0.5,
         aug_form="sym_kl", forward_ce=0.2, y_eps=1e-12, em_iters=15, lr=1e-2, beta1=0.8,
         beta2=0.99, eps=1e-3, weight_decay=0.1),
]


class Block(torch.nn.Module):
    """conv -> BN -> ReLU (-> max-pool): one vgg4 block."""

    def __init__(self, cin, cout, pool):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class Vgg4(torch.nn.Module):
    """Module names match ecl's param names (block0.conv.weight, head.bias)."""

    def __init__(self, c):
        super().__init__()
        widths = [c["width"] << i for i in range(4)]
        cins = [c["cin"]] + widths[:3]
        for i in range(4):
            setattr(self, "block%d" % i, Block(cins[i], widths[i], i < 3))
        m = widths[3]
        self.head_bn = (torch.nn.BatchNorm1d(m, eps=BN_EPS, momentum=BN_MOMENTUM,
                                             affine=False) if c["head_bn"] else None)
        self.head = torch.nn.Linear(m, c["k"])
        self.logit_scale = c["logit_scale"]

    def forward(self, x):
        for i in range(4):
            x = getattr(self, "block%d" % i)(x)
        feat = x.mean(dim=(2, 3))
        if self.head_bn is not None:
            feat = self.head_bn(feat)
        return self.head(feat) * self.logit_scale


def fill_random(net, gen):
    """Fixed float32 values: conv and head as torch's default init bounds;
    BN gamma/beta and running stats away from 1/0 so each one matters."""
    state = {}
    for name, t in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        shape = tuple(t.shape)
        if name.endswith("conv.weight") or name == "head.weight":
            fan_in = int(np.prod(shape[1:]))
            v = (torch.rand(shape, generator=gen) * 2 - 1) / fan_in ** 0.5
        elif name == "head.bias":
            v = (torch.rand(shape, generator=gen) * 2 - 1) / net.head.in_features ** 0.5
        elif name.endswith("bn.weight"):
            v = 1 + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith("bias") or name.endswith("running_mean"):
            v = 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith("running_var"):
            v = 0.5 + torch.rand(shape, generator=gen)
        else:
            raise RuntimeError("make_golden: no initialiser for " + name)
        state[name] = v.float()
    net.load_state_dict({k: v.double() for k, v in state.items()}, strict=False)
    return state


def make_input(c, gen):
    """[(V+1)B, C, H, W]: clean images, then each view a shifted, noisy copy."""
    clean = torch.randn((c["b"], c["cin"], c["h"], c["w"]), generator=gen)
    views = [clean]
    for v in range(1, c["views"] + 1):
        shifted = torch.roll(clean, shifts=(v, -v), dims=(2, 3))
        views.append(shifted + 0.3 * torch.randn(clean.shape, generator=gen))
    return torch.cat(views).float()


def em_solve(sigma, lam, iters):
    """EM of DESIGN.md section 1 in the N-free form, u uniform: from y = sigma,
    y_ik <- (sigma_ik + w_k y_ik) / sum_c (sigma_ic + w_c y_ic), with
    w_k = lambda u_k / ybar_k (the sum equals 1 + sum_c w_c y_ic when sigma's
    rows sum to 1); y and ybar floored at EM_FLOOR as em.c does."""
    b, k = sigma.shape
    y = sigma.clamp_min(EM_FLOOR)
    y = (y / y.sum(1, keepdim=True)).clamp_min(EM_FLOOR)
    for _ in range(iters):
        ybar = (y.sum(0) / b).clamp_min(EM_FLOOR)
        w = lam * (1.0 / k) / ybar
        num = sigma + w * y
        y = (num / num.sum(1, keepdim=True)).clamp_min(EM_FLOOR)
    return y


def loss_terms(c, net, logits, y):
    """Every term of loss.h; y fixed, the augmentation target detached."""
    b, k, nv = c["b"], c["k"], c["views"] + 1
    ls = F.log_softmax(logits, dim=1)
    ls0, sig0 = ls[:b], ls[:b].exp()
    rce = -(sig0 * y.clamp_min(c["y_eps"]).log()).sum() / b
    fce = -(y * ls0).sum() / b
    ybar = (y.sum(0) / b).clamp_min(EM_FLOOR)
    fair = ((1.0 / k) * torch.log((1.0 / k) / ybar)).sum()
    head_norm = (net.head.weight ** 2).sum()

    # Augmentation: divergence between the fixed clean sigma and each view.
    p, lp = sig0.detach(), ls0.detach()
    aug = 0.0
    for v in range(1, nv):
        lq = ls[v * b:(v + 1) * b]
        kl_pq = (p * (lp - lq)).sum()
        if c["aug_form"] == "kl":
            aug = aug + kl_pq
        elif c["aug_form"] == "sym_kl":
            aug = aug + kl_pq + (lq.exp() * (lq - lp)).sum()
        else:
            raise RuntimeError("make_golden: aug_form %s not written" % c["aug_form"])
    aug = aug / (b * (nv - 1))
    total = (rce + c["lam"] * fair + c["gamma"] * head_norm + c["alpha"] * aug
             + c["forward_ce"] * fce)
    return dict(rce=rce, fairness=fair, head_norm=head_norm, aug=aug, fce=fce, total=total)


def adamw_first_step(c, name, p, g):
    """src/optim.c's update at step 1 from zero moments, in float64:
    p (1 - lr wd) - lr/bc1 * m1 / (sqrt(m2) / sqrt(bc2) + eps), wd on conv
    weights only."""
    b1, b2, lr = c["beta1"], c["beta2"], c["lr"]
    m1 = (1 - b1) * g
    m2 = (1 - b2) * g * g
    bc1, bc2 = 1 - b1, 1 - b2
    shrink = 1 - lr * c["weight_decay"] if name.endswith("conv.weight") else 1.0
    return p * shrink - (lr / bc1) * m1 / (m2.sqrt() / bc2 ** 0.5 + c["eps"])


def st_write(path, tensors, meta):
    """safetensors by hand: u64 LE header length, JSON header (padded with
    spaces to a multiple of 8), then the raw little-endian data in order."""
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, arr in tensors:
        dt = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}[arr.dtype]
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def metadata(c):
    """The case's settings under src/config.c's key names."""
    return {
        "model.width": str(c["width"]), "model.clusters": str(c["k"]),
        "model.heads": "1", "model.head_bn": "true" if c["head_bn"] else "false",
        "model.logit_scale": repr(c["logit_scale"]), "loss.lambda": repr(c["lam"]),
        "loss.gamma": repr(c["gamma"]), "loss.alpha": repr(c["alpha"]),
        "loss.aug_form": c["aug_form"], "loss.forward_ce": repr(c["forward_ce"]),
        "loss.y_eps": repr(c["y_eps"]), "em.max_iter": str(c["em_iters"]),
        "em.solver": "em", "optim.name": "adam", "optim.lr": repr(c["lr"]),
        "optim.beta1": repr(c["beta1"]), "optim.beta2": repr(c["beta2"]),
        "optim.eps": repr(c["eps"]), "optim.weight_decay": repr(c["weight_decay"]),
        "augment.views": str(c["views"]), "run.batch": str(c["b"]),
        "generator": "scripts/make_golden.py, torch %s, float64" % torch.__version__,
    }


def run_case(c):
    """One training step; returns the (name, array) list to store."""
    gen = torch.Generator().manual_seed(c["seed"])
    net = Vgg4(c).double()
    init = fill_random(net, gen)
    x = make_input(c, gen)
    out = [(n, v.numpy()) for n, v in init.items()] + [("x", x.numpy())]

    # Forward of every view in one batch, in training mode (batch statistics).
    net.train()
    logits = net(x.double())
    b = c["b"]
    sigma = F.softmax(logits[:b].detach(), dim=1)
    y = em_solve(sigma, c["lam"], c["em_iters"])
    terms = loss_terms(c, net, logits, y)
    net.zero_grad()
    terms["total"].backward()

    # What the C test compares: activations, labels, terms, grads, stats.
    f32 = lambda t: t.detach().float().numpy()
    out += [("logits", f32(logits)), ("sigma", f32(sigma)), ("y", f32(y))]
    out += [("loss." + n, np.array([v.item()], dtype=np.float64)) for n, v in terms.items()]
    params = dict(net.named_parameters())
    out += [(n + ".grad", f32(p.grad)) for n, p in params.items()]
    out += [(n + ".after", f32(v)) for n, v in net.state_dict().items()
            if "running" in n]
    out += [(n + ".after", f32(adamw_first_step(c, n, p.detach(), p.grad)))
            for n, p in params.items()]
    return out, terms


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for c in CASES:
        tensors, terms = run_case(c)
        path = os.path.join(OUT_DIR, c["file"])
        st_write(path, tensors, metadata(c))
        print("make_golden: wrote %s (%d tensors, %d bytes); total loss %.6f" %
              (os.path.relpath(path), len(tensors), os.path.getsize(path),
               terms["total"].item()))


if __name__ == "__main__":
    main()
