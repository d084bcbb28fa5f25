#!/usr/bin/python3
"""PyTorch CPU peer for any cnn-train config: the same network, batch, loss
and optimizer, timed the way cnn-bench times ours (launch/bench.sh).

The network is rebuilt from `cnn-train --summary --json CONFIG` (the expanded
graph), so every shipped config has a peer, including the ones
../shared/bench/torch_train.py does not know (fashion_resnet). Standard
torch.nn modules only, so PyTorch picks its own kernels for either layout.

  /usr/bin/python3 launch/torch_peer.py --config configs/fashion_resnet.ini \
      --threads 1 [--channels-last] [--steps 30] [--real --max-steps 300]

Prints one line: RESULT <mode> config=... train_img_s=N.
  synthetic  one random batch, --warmup steps, then --steps timed steps
  real       IDX data ([data] dir of the config), shuffled batches, the first
             --max-steps steps of an epoch (the first --skip are not timed)
"""
import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--cnn-train", default=os.path.join(os.path.dirname(__file__), "..", "build", "cnn-train"))
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--batch", type=int, default=0, help="0 = the config's [train] batch_size")
ap.add_argument("--channels-last", action="store_true")
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--real", action="store_true")
ap.add_argument("--max-steps", type=int, default=300)
ap.add_argument("--skip", type=int, default=20)
args = ap.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)


def ini_keys(path, section):
    """key = value lines of the first [section] of an INI file."""
    sec, out = None, {}
    for line in open(path):
        line = line.split(";")[0].split("#")[0].strip()
        m = re.match(r"^\[(.*)\]$", line)
        if m:
            if sec == section:
                break
            sec = m.group(1).strip()
        elif sec == section and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def pair(v, default):
    if v is None:
        return default
    h, _, w = v.partition("x")
    return int(h), int(w or h)


def tf_same(n, k, s):
    """TensorFlow's 'same' padding (before, after) along one axis."""
    out = (n + s - 1) // s
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class Conv(nn.Module):
    """conv2d / depthwise_conv2d with Keras's padding rules."""

    def __init__(self, cin, cout, keys, hw, groups=1, bias=True):
        super().__init__()
        self.k = pair(keys.get("kernel"), (3, 3))
        self.s = pair(keys.get("stride"), (1, 1))
        p = keys.get("padding", "valid")
        if p == "same":
            t, b = tf_same(hw[0], self.k[0], self.s[0])
            l, r = tf_same(hw[1], self.k[1], self.s[1])
        elif p == "valid":
            t = b = l = r = 0
        else:
            t = b = l = r = int(p)
        self.sym = t == b and l == r
        self.pad = (l, r, t, b)
        self.conv = nn.Conv2d(cin, cout, self.k, self.s, padding=(t, l) if self.sym else 0,
                              groups=groups, bias=bias)

    def forward(self, x):
        return self.conv(x if self.sym else F.pad(x, self.pad))


ACT = {"linear": None, "softmax": None, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
       "relu6": nn.ReLU6, "elu": nn.ELU, "gelu": nn.GELU, "swish": nn.SiLU}


def activation(name, keys, last):
    if last and name in ("softmax", "sigmoid"):
        return None  # the loss takes the logits
    if name == "leaky_relu":
        return nn.LeakyReLU(float(keys.get("alpha", 0.3)))
    if name not in ACT:
        raise SystemExit("torch_peer: activation %s not mapped" % name)
    return ACT[name]() if ACT[name] else None


class Net(nn.Module):
    def __init__(self, g):
        super().__init__()
        self.g = g
        self.mods = nn.ModuleDict()
        self.acts = nn.ModuleDict()
        shape = {g["input"]["name"]: g["input"]["shape"]}  # HWC
        for L in g["layers"]:
            k, t, name = L["keys"], L["type"], L["name"]
            ins = shape[L["inputs"][0]]
            cin = ins[-1]
            out = L["output_shape"]
            bias = k.get("use_bias", "true") != "false"
            if t == "conv2d":
                m = Conv(cin, out[-1], k, ins[:2], bias=bias)
            elif t == "depthwise_conv2d":
                m = Conv(cin, out[-1], k, ins[:2], groups=cin, bias=bias)
            elif t == "separable_conv2d":
                dm = int(k.get("depth_multiplier", 1))
                m = nn.Sequential(Conv(cin, cin * dm, k, ins[:2], groups=cin, bias=False),
                                  nn.Conv2d(cin * dm, out[-1], 1, bias=bias))
            elif t == "dense":
                m = nn.Linear(int(np.prod(ins)), out[-1], bias=bias)
            elif t == "batch_normalization":
                bn = nn.BatchNorm2d if len(ins) == 3 else nn.BatchNorm1d
                m = bn(cin, eps=float(k.get("epsilon", 0.001)),
                       momentum=1 - float(k.get("momentum", 0.99)))
            elif t in ("maxpool2d", "avgpool2d"):
                ks = pair(k.get("size"), (2, 2))
                st = pair(k.get("stride"), ks)
                m = (nn.MaxPool2d if t == "maxpool2d" else nn.AvgPool2d)(ks, st)
            elif t == "global_average_pooling2d":
                m = nn.AdaptiveAvgPool2d(1)
            elif t == "global_max_pooling2d":
                m = nn.AdaptiveMaxPool2d(1)
            elif t == "dropout":
                m = nn.Dropout(float(k.get("rate", 0.5)))
            elif t in ("flatten", "add", "concatenate", "activation"):
                m = None
            else:
                raise SystemExit("torch_peer: layer type %s not mapped" % t)
            if m is not None:
                self.mods[name] = m
            a = activation(L.get("activation", "linear"), k, name == g["output"])
            if a is not None:
                self.acts[name] = a
            shape[name] = out

    def forward(self, x):
        t = {self.g["input"]["name"]: x}
        for L in self.g["layers"]:
            name, typ = L["name"], L["type"]
            ins = [t[i] for i in L["inputs"]]
            y = ins[0]
            if typ == "add":
                y = ins[0]
                for other in ins[1:]:
                    y = y + other
            elif typ == "concatenate":
                y = torch.cat(ins, dim=1)
            elif typ == "flatten" or (typ == "dense" and y.dim() > 2):
                y = torch.flatten(y, 1)
            if name in self.mods:
                y = self.mods[name](y)
                if typ.startswith("global_"):
                    y = torch.flatten(y, 1)
            if name in self.acts:
                y = self.acts[name](y)
            t[name] = y
        return t[self.g["output"]]


def optimizer(net, keys):
    typ = keys.get("type", "sgd")
    lr = float(keys.get("lr", 0.001 if typ != "sgd" else 0.01))
    if typ == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr)
    if typ == "rmsprop":
        return torch.optim.RMSprop(net.parameters(), lr=lr, alpha=0.9, eps=1e-7)
    mom = float(keys.get("momentum", 0))
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=mom,
                           nesterov=keys.get("nesterov", "false") == "true" and mom > 0,
                           weight_decay=float(keys.get("weight_decay", 0)))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


g = json.loads(subprocess.run([args.cnn_train, "--summary", "--json", args.config], check=True,
                              capture_output=True, text=True).stdout)
batch = args.batch or int(ini_keys(args.config, "train").get("batch_size", 32))
net = Net(g)
opt = optimizer(net, ini_keys(args.config, "optimizer"))
binary = g["loss"] == "binary_crossentropy"
lossf = nn.BCEWithLogitsLoss() if binary else nn.CrossEntropyLoss()
fmt = torch.channels_last if args.channels_last else torch.contiguous_format
net = net.to(memory_format=fmt)
h, w, c = g["input"]["shape"]
ncls = g["layers"][-1]["output_shape"][-1]


def target(n):
    return torch.randint(0, 2, (n, 1)).float() if binary else torch.randint(0, ncls, (n,))


def step(x, y):
    opt.zero_grad(set_to_none=True)
    loss = lossf(net(x), y)
    loss.backward()
    opt.step()


tag = "config=%s threads=%d batch=%d%s" % (os.path.basename(args.config), args.threads, batch,
                                         " channels_last" if args.channels_last else "")
net.train()
if not args.real:
    x = torch.randn(batch, c, h, w).contiguous(memory_format=fmt)
    y = target(batch)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            t0 = time.perf_counter()
        step(x, y)
    print("RESULT synthetic %s train_img_s=%.1f" % (tag, args.steps * batch / (time.perf_counter() - t0)))
    sys.exit(0)

data = ini_keys(args.config, "data")
if data.get("format", "idx") != "idx":
    raise SystemExit("torch_peer: --real reads IDX data only (%s has format %s)"
                     % (args.config, data.get("format")))
d = data.get("dir", "/usr/share/datasets/fashion-mnist")
xtr = torch.from_numpy(read_idx(os.path.join(d, "train-images-idx3-ubyte.gz")).astype(np.float32) / 255.0)
xtr = xtr.reshape(-1, c, h, w)
ytr = torch.from_numpy(read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz")).astype(np.int64))
perm = torch.randperm(xtr.shape[0], generator=torch.Generator().manual_seed(0))
seen = 0
for s in range(args.max_steps):
    if s == args.skip:
        t0, seen = time.perf_counter(), 0
    idx = perm[s * batch:(s + 1) * batch]
    step(xtr[idx].contiguous(memory_format=fmt), ytr[idx])
    seen += idx.numel()
print("RESULT real %s train_img_s=%.1f" % (tag, seen / (time.perf_counter() - t0)))
