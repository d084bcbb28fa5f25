#!/usr/bin/python3
"""An independent check of cnn-train against PyTorch (tests/torch/torch_test.sh).

Builds a PyTorch model from `cnn-train --summary --json CHECKPOINT` (the
expanded graph: layers, keys, inputs, tensor shapes), loads the checkpoint's
/model with h5py, reads the IDX files itself, and checks, in float64:

  eval  the test set through the network in inference mode (BatchNormalization
        with the moving statistics): every sample's logits against cnn-train's
        (tests/tools/logits_dump), and the number classified correctly against
        cnn-train's test line;
  step  one SGD step (Keras's Nesterov momentum as cnn-train defines it, weight
        decay on kernels) on the first N training samples as one batch, BN in
        training mode with the batch statistics (one reduction chunk holds the
        whole batch), from the checkpoint BEFORE: every updated tensor, and the
        moving statistics (Keras: biased variance), against checkpoint AFTER.

Exits 1 on a disagreement beyond the tolerances, printing the worst tensor.
"""
import argparse
import gzip
import json
import math
import re
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--summary", required=True, help="cnn-train --summary --json output")
ap.add_argument("--before", required=True, help="checkpoint the step starts from")
ap.add_argument("--after", help="checkpoint after one step on --train-n samples")
ap.add_argument("--logits", help="logits_dump output for --before")
ap.add_argument("--correct", type=int, help="correct= of cnn-train's test line")
ap.add_argument("--train-n", type=int, default=16)
ap.add_argument("--test-n", type=int, default=500)
ap.add_argument("--logit-tol", type=float, default=1e-4)
ap.add_argument("--weight-tol", type=float, default=1e-5)
ap.add_argument("--update-tol", type=float, default=1e-3)
args = ap.parse_args()

torch.set_num_threads(1)
DT = torch.float64
graph = json.load(open(args.summary))
assert graph["data_format"] == "channels_first", graph["data_format"]


def load_model(path):
    out = {}
    with h5py.File(path, "r") as f:
        for layer in f["model"]:
            for name in f["model"][layer]:
                out[(layer, name)] = torch.tensor(f["model"][layer][name][()], dtype=DT)
        cfg = f["config"][()].decode()
        opt = {k: f["optimizer"].attrs[k] for k in f["optimizer"].attrs}
        mom = {}
        if "m" in f["optimizer"]:
            for layer in f["optimizer/m"]:
                for name in f["optimizer/m"][layer]:
                    mom[(layer, name)] = torch.tensor(f["optimizer/m"][layer][name][()], dtype=DT)
        lr = f["history/lr"][()][-1] if "history" in f and "lr" in f["history"] else None
    return out, cfg, opt, mom, lr


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def data_of(cfg):
    """The [data] keys this check needs from the stored config text."""
    sec, keys = None, {}
    for line in cfg.splitlines():
        line = line.split(";")[0].split("#")[0].strip()
        m = re.match(r"^\[(.*)\]$", line)
        if m:
            sec = m.group(1).strip()
        elif sec == "data" and "=" in line:
            k, v = line.split("=", 1)
            keys[k.strip()] = v.strip()
    assert keys.get("format", "idx") == "idx", "only IDX data: " + keys.get("format")
    r = keys.get("rescale", "1/255")
    a, _, b = r.partition("/")
    scale = float(a) / float(b) if b else float(a)
    d = keys.get("dir", "/usr/share/datasets/fashion-mnist")
    return d, scale


def size2(v, default=None):
    if v is None:
        return default
    if "x" in v:
        h, w = v.split("x")
        return int(h), int(w)
    return int(v), int(v)


def same_pad(n, k, s):
    """TensorFlow's 'same': output ceil(n/s), the odd pixel after."""
    out = (n + s - 1) // s
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def pad_for(x, keys, kh, kw, sh, sw):
    p = keys.get("padding", "valid")
    if p == "valid":
        return x
    if p == "same":
        t, b = same_pad(x.shape[2], kh, sh)
        l, r = same_pad(x.shape[3], kw, sw)
        return F.pad(x, (l, r, t, b))
    n = int(p)
    return F.pad(x, (n, n, n, n))


def activate(x, name, keys):
    if name in ("linear", "softmax"):  # softmax: the loss takes the logits
        return x
    if name == "relu":
        return F.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu6":
        return torch.clamp(x, 0, 6)
    if name == "leaky_relu":
        return F.leaky_relu(x, float(keys.get("alpha", 0.3)))
    if name == "elu":
        return F.elu(x, float(keys.get("alpha", 1.0)))
    if name == "gelu":
        return F.gelu(x)
    if name == "swish":
        return x * torch.sigmoid(x)
    raise SystemExit("torch_check: activation %s not mapped" % name)


def forward(params, buffers, x, training, batch_stats):
    """params/buffers: {(layer, tensor): tensor}; batch_stats gets each BN's
    (mean, biased variance) in training mode."""
    t = {graph["input"]["name"]: x}
    for L in graph["layers"]:
        k, name, typ = L["keys"], L["name"], L["type"]
        ins = [t[i] for i in L["inputs"]]
        x = ins[0]
        P = lambda p: params.get((name, p))  # noqa: E731
        if typ == "conv2d":
            kh, kw = size2(k["kernel"])
            sh, sw = size2(k.get("stride"), (1, 1))
            y = F.conv2d(pad_for(x, k, kh, kw, sh, sw), P("kernel"), P("bias"), (sh, sw))
        elif typ == "dense":
            y = x.reshape(x.shape[0], -1) @ P("kernel")
            if P("bias") is not None:
                y = y + P("bias")
        elif typ == "batch_normalization":
            eps = float(k.get("epsilon", 0.001))
            dims = [0, 2, 3] if x.dim() == 4 else [0]
            shape = [1, -1, 1, 1] if x.dim() == 4 else [1, -1]
            if training:
                mean = x.mean(dim=dims)
                var = x.var(dim=dims, unbiased=False)
                batch_stats[name] = (mean.detach(), var.detach())
            else:
                mean, var = buffers[(name, "moving_mean")], buffers[(name, "moving_variance")]
            y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
            if P("gamma") is not None:
                y = y * P("gamma").reshape(shape)
            if P("beta") is not None:
                y = y + P("beta").reshape(shape)
        elif typ == "activation":
            y = x
        elif typ == "add":
            y = sum(ins[1:], ins[0])
        elif typ == "concatenate":
            y = torch.cat(ins, dim=1)
        elif typ == "global_average_pooling2d":
            y = x.mean(dim=(2, 3))
        elif typ == "global_max_pooling2d":
            y = x.amax(dim=(2, 3))
        elif typ == "flatten":
            y = x.reshape(x.shape[0], -1)
        elif typ == "dropout":
            assert not training or float(k["rate"]) == 0, "dropout in the training step"
            y = x
        elif typ in ("maxpool2d", "avgpool2d"):
            kh, kw = size2(k.get("size"), (2, 2))
            sh, sw = size2(k.get("stride"), (kh, kw))
            assert k.get("padding", "valid") == "valid", "padded pooling not mapped"
            pool = F.max_pool2d if typ == "maxpool2d" else F.avg_pool2d
            y = pool(x, (kh, kw), (sh, sw))
        else:
            raise SystemExit("torch_check: layer type %s not mapped" % typ)
        y = activate(y, L.get("activation", "linear"), k)
        assert list(y.shape[1:]) == ([L["output_shape"][2], L["output_shape"][0],
                                      L["output_shape"][1]] if y.dim() == 4
                                     else [L["output_shape"][2]]), (name, y.shape)
        t[name] = y
    return t[graph["output"]]


def trainable(L, name):
    for T in L["tensors"]:
        if T["name"] == name:
            return T["trainable"]
    raise KeyError(name)


def split(model):
    by_layer = {L["name"]: L for L in graph["layers"]}
    params = {key: v for key, v in model.items() if trainable(by_layer[key[0]], key[1])}
    buffers = {key: v for key, v in model.items() if key not in params}
    return params, buffers


def check_shapes(model):
    for L in graph["layers"]:
        for T in L["tensors"]:
            got = list(model[(L["name"], T["name"])].shape)
            assert got == T["shape"], (L["name"], T["name"], got, T["shape"])


def worst(pairs):
    """max over tensors of max|a-b| / max|b| and the tensor; max|b| is at least
    1e-3 of the largest over all tensors, so a tensor whose exact value is ~0
    (the gradient of a bias that BatchNormalization follows is 0: only float
    noise moves it) is measured against the network's scale, not its own."""
    out = (0.0, None)
    floor = 1e-3 * max(float(b.abs().max()) for _, _, b in pairs)
    for key, a, b in pairs:
        den = max(float(b.abs().max()), floor)
        r = float((a - b).abs().max()) / den
        if r > out[0]:
            out = (r, key)
    return out


before, cfg, opt, mom, _ = load_model(args.before)
check_shapes(before)
ddir, scale = data_of(cfg)
ok = True
H, W, C = graph["input"]["shape"]

if args.logits:
    imgs = idx(ddir + "/t10k-images-idx3-ubyte.gz")[:args.test_n]
    labels = idx(ddir + "/t10k-labels-idx1-ubyte.gz")[:args.test_n].astype(np.int64)
    x = torch.tensor(imgs.reshape(-1, C, H, W), dtype=DT) * scale
    params, buffers = split(before)
    with torch.no_grad():
        z = forward(params, buffers, x, False, {})
    raw = open(args.logits, "rb").read()
    n, k = np.frombuffer(raw[:8], dtype=np.int32)
    rec = np.frombuffer(raw[8:], dtype=np.uint8).reshape(n, 4 + 4 * k)
    cl = rec[:, :4].copy().view(np.int32).ravel()
    cz = torch.tensor(rec[:, 4:].copy().view(np.float32), dtype=DT)
    assert n == args.test_n and (cl == labels).all(), "the test labels differ from the IDX file"
    rel = ((cz - z).abs().amax(dim=1) / z.abs().amax(dim=1)).max().item()
    correct = int((z.argmax(dim=1) == torch.tensor(labels)).sum())
    ccorrect = int((cz.argmax(dim=1) == torch.tensor(labels)).sum())
    print("eval: %d test samples: torch correct=%d accuracy=%.4f, cnn-train correct=%d (test line %s); "
          "logits: max |diff| / max |logit| per sample = %.2e (tolerance %.0e)"
          % (n, correct, correct / n, ccorrect, args.correct, rel, args.logit_tol))
    if rel > args.logit_tol or (args.correct is not None and correct != args.correct):
        ok = False
        print("FAIL: eval disagrees")

if args.after:
    after, _, opt_a, mom_a, lr = load_model(args.after)
    imgs = idx(ddir + "/train-images-idx3-ubyte.gz")[:args.train_n]
    labels = torch.tensor(idx(ddir + "/train-labels-idx1-ubyte.gz")[:args.train_n].astype(np.int64))
    x = torch.tensor(imgs.reshape(-1, C, H, W), dtype=DT) * scale
    params, buffers = split(before)
    params = {key: v.clone().requires_grad_(True) for key, v in params.items()}
    stats = {}
    loss = F.cross_entropy(forward(params, buffers, x, True, stats), labels)
    loss.backward()
    assert opt["type"] in (b"sgd", "sgd"), opt["type"]
    mu, wd, nest = float(opt_a["momentum"]), float(opt_a["weight_decay"]), int(opt_a["nesterov"])
    pairs, upd, vel = [], [], []
    for key, p in params.items():
        g = p.grad + (wd * p.detach() if key[1].endswith("kernel") else 0)
        if mu:
            v = mu * mom[key] - lr * g
            new = p.detach() + (mu * v - lr * g if nest else v)
            vel.append((key, mom_a[key], v))
        else:
            new = p.detach() - lr * g
        pairs.append((key, after[key], new))
        upd.append((key, after[key] - before[key], new - before[key]))
    for key, b in buffers.items():
        layer, name = key
        m = float([L for L in graph["layers"] if L["name"] == layer][0]["keys"].get("momentum", 0.99))
        s = stats[layer][0 if name == "moving_mean" else 1]
        pairs.append((key, after[key], m * b + (1 - m) * s))
    wrel, wkey = worst(pairs)
    urel, ukey = worst(upd)
    vrel, vkey = worst(vel) if vel else (0.0, None)
    print("step: %d samples, loss %.6f, lr %.6g, momentum %g (nesterov %d), weight decay %g:\n"
          "  updated tensors (parameters, moving statistics): max |diff| / max |tensor| = %.2e at %s"
          " (tolerance %.0e)\n"
          "  the updates w_after - w_before: %.2e at %s (tolerance %.0e; float32 rounding of w)\n"
          "  the new velocities (momentum * v - lr * gradient): %.2e at %s (tolerance %.0e)"
          % (args.train_n, float(loss), lr, mu, nest, wd, wrel, "/".join(wkey or ()),
             args.weight_tol, urel, "/".join(ukey or ()), args.update_tol,
             vrel, "/".join(vkey or ("-",)), args.update_tol))
    if wrel > args.weight_tol or urel > args.update_tol or vrel > args.update_tol:
        ok = False
        print("FAIL: the step disagrees")

sys.exit(0 if ok else 1)
