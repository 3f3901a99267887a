#!/usr/bin/python3
"""The PyTorch side of scripts/bench.sh, and its report.

  bench_torch.py run --channels 3 --size 32 --batch 250 --threads 1
      times the vgg4 training step and inference pass written the usual way
      in PyTorch (float32; CPU, or the GPU with --device cuda, optionally
      --precision tf32), the same step ecl-bench times: one forward
      of all (V+1) B views in training mode, softmax of the clean view, 15
      EM iterations without gradient, reverse CE + fairness + augmentation
      KL + forward CE, backward, torch.optim.AdamW. Random images, no data
      loading. Prints one JSON object, in ecl-bench's fields.

  bench_torch.py report --ecl E.jsonl --torch T.jsonl --out build/bench/bench.json
      pairs the two sides' lines by shape, batch and threads, prints a table
      with the ecl / PyTorch ratios and writes it, with the environment (CPU,
      versions, threads), as JSON.

Not here: the C side (src/main_bench.c), the loop over cases (bench.sh).
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

EM_FLOOR = 1e-30


def conv_flops(channels, size, width):
    """2 x multiply-adds of the four convs per image, forward (as ecl-bench)."""
    flops, cin, h = 0.0, channels, size
    for i in range(4):
        cout = width << i
        flops += 2.0 * h * h * cout * cin * 9
        cin = cout
        if i < 3:
            h //= 2
    return flops


def build_net(torch, a):
    """vgg4 of src/model.c with the trainer's defaults (head BN, logits / 2)."""
    nn = torch.nn
    layers, cin = [], a.channels
    for i in range(4):
        cout = a.width << i
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(cin, affine=False),
               nn.Linear(cin, a.clusters)]
    return nn.Sequential(*layers)


def em_labels(torch, sigma, lam, iters):
    """The N-free EM of DESIGN.md section 1 from y = sigma, u uniform."""
    b, k = sigma.shape
    y = sigma.clamp_min(EM_FLOOR)
    for _ in range(iters):
        w = lam / k / (y.sum(0) / b).clamp_min(EM_FLOOR)
        num = sigma + w * y
        y = (num / num.sum(1, keepdim=True)).clamp_min(EM_FLOOR)
    return y


def train_step(torch, net, opt, x, a, sync):
    """One step as src/train.c runs it; returns the phase times (sync()
    waits for the device at each phase's end)."""
    F = torch.nn.functional
    b = a.batch
    t0 = time.perf_counter()
    logits = net(x) * 0.5
    ls = F.log_softmax(logits, dim=1)
    sync()
    t1 = time.perf_counter()
    with torch.no_grad():
        y = em_labels(torch, ls[:b].exp(), 100.0, 15)
    sync()
    t2 = time.perf_counter()

    # Reverse CE, forward CE (0.2), augmentation KL to the detached clean view.
    ls0 = ls[:b]
    rce = -(ls0.exp() * y.clamp_min(1e-12).log()).sum() / b
    fce = -(y * ls0).sum() / b
    p, lp = ls0.detach().exp(), ls0.detach()
    aug = sum((p * (lp - ls[v * b:(v + 1) * b])).sum() for v in range(1, a.views + 1))
    loss = rce + 0.2 * fce + aug / (b * max(a.views, 1))
    sync()
    t3 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sync()
    t4 = time.perf_counter()
    opt.step()
    sync()
    t5 = time.perf_counter()
    return dict(forward_s=t1 - t0, em_s=t2 - t1, loss_s=t3 - t2, backward_s=t4 - t3,
                adam_s=t5 - t4, total=t5 - t0)


def run(a):
    """Times the step and the inference pass; prints one JSON object."""
    try:
        import torch
    except ImportError:
        sys.exit("bench_torch: torch missing; apt-get install -y python3-torch "
                 "(and run with /usr/bin/python3)")
    threads = a.threads if a.threads > 0 else os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    dev = torch.device(a.device)
    sync = (lambda: None)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("bench_torch: --device cuda but torch sees no GPU")
        # Same precision as ecl's run.precision, and cuDNN's algorithm
        # search on, as ecl's cudnnFind.
        tf32 = a.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
        sync = torch.cuda.synchronize
    net = build_net(torch, a).to(dev)
    decay = [p for n, p in net.named_parameters() if p.dim() == 4]
    rest = [p for n, p in net.named_parameters() if p.dim() != 4]
    opt = torch.optim.AdamW([dict(params=decay), dict(params=rest, weight_decay=0.0)],
                            lr=1e-3, weight_decay=0.0)
    n = (a.views + 1) * a.batch
    x = torch.rand(n, a.channels, a.size, a.size).to(dev)

    # Training steps after the untimed warm-up ones.
    net.train()
    for _ in range(a.warmup):
        train_step(torch, net, opt, x, a, sync)
    sums = {}
    for _ in range(a.steps):
        for key, v in train_step(torch, net, opt, x, a, sync).items():
            sums[key] = sums.get(key, 0.0) + v
    step_s = sums.pop("total") / a.steps

    # Inference on the clean batch with running statistics.
    net.eval()
    with torch.no_grad():
        for _ in range(a.warmup):
            net(x[:a.batch])
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            net(x[:a.batch])
        sync()
        infer_s = (time.perf_counter() - t0) / a.steps

    f = conv_flops(a.channels, a.size, a.width)
    out = dict(impl="torch", device=a.device, precision=a.precision, channels=a.channels,
               size=a.size, batch=a.batch, views=a.views,
               width=a.width, clusters=a.clusters, threads=threads, steps=a.steps,
               torch=torch.__version__, train_img_s=a.batch / step_s,
               infer_img_s=a.batch / infer_s, train_step_s=step_s, infer_pass_s=infer_s,
               train_gflop_s=3 * f * n / step_s * 1e-9, infer_gflop_s=f * a.batch / infer_s * 1e-9,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
               rss_after_import_mb=rss_import)
    out.update({k: v / a.steps for k, v in sums.items()})
    print(json.dumps(out))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment():
    env = dict(cpu=cpu_model(), cores=os.cpu_count(), python=platform.python_version(),
               kernel=platform.release(), load_avg=os.getloadavg(),
               time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        import torch
        env["torch"] = torch.__version__
        env["torch_parallel"] = torch.__config__.parallel_info().splitlines()[:6]
    except ImportError:
        env["torch"] = None
    try:
        env["cc"] = subprocess.run(["cc", "--version"], capture_output=True,
                                   text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        env["cc"] = None
    return env


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def report(a):
    """The side-by-side table and the JSON file."""
    key = lambda r: (r.get("device", "cpu"), r["channels"], r["size"], r["batch"],
                     r["threads"])
    torch_rows = {key(r): r for r in read_jsonl(a.torch)}
    rows = []
    print("%-9s %5s %3s | %9s %9s %6s | %9s %9s %6s | %7s %7s %7s | %8s %8s" % (
        "shape", "batch", "thr", "ecl trn/s", "pt trn/s", "ratio", "ecl inf/s", "pt inf/s",
        "ratio", "ecl GF/s", "pt GF/s", "sgemm", "ecl MB", "pt MB"))
    for e in read_jsonl(a.ecl):
        t = torch_rows.get(key(e))
        if t is None:
            print("bench_torch: no PyTorch line for %s" % (key(e),), file=sys.stderr)
            continue
        row = dict(ecl=e, torch=t, train_ratio=e["train_img_s"] / t["train_img_s"],
                   infer_ratio=e["infer_img_s"] / t["infer_img_s"])
        rows.append(row)
        print("%-9s %5d %3d | %9.1f %9.1f %6.2f | %9.1f %9.1f %6.2f | %7.1f %7.1f %7.1f | "
              "%8.0f %8.0f"
              % ("%dx%dx%d" % (e["channels"], e["size"], e["size"]), e["batch"], e["threads"],
                 e["train_img_s"], t["train_img_s"], row["train_ratio"], e["infer_img_s"],
                 t["infer_img_s"], row["infer_ratio"], e["train_gflop_s"], t["train_gflop_s"],
                 e.get("sgemm_gflop_s", float("nan")), e["peak_rss_mb"], t["peak_rss_mb"]))
    print("ratio = ecl / PyTorch images per second (> 1: ecl faster). GF/s: conv work of "
          "the training step; sgemm: the machine's sgemm rate at that thread count (the "
          "ceiling). MB: peak resident memory; before any work ecl holds ~%.0f MB (its "
          "shared libraries, cuDNN and cuBLAS in a CUDA build) and PyTorch ~%.0f MB after "
          "its import." %
          (min([r["ecl"].get("rss_at_start_mb", 0) for r in rows] or [0]),
           min([r["torch"]["rss_after_import_mb"] for r in rows] or [0])))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(dict(environment=environment(), cases=rows), f, indent=1)
    print("bench_torch: wrote %s" % a.out)
    return 0 if rows else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    for name, default in [("channels", 3), ("size", 32), ("batch", 250), ("threads", 0),
                          ("steps", 5), ("warmup", 1), ("width", 64), ("clusters", 10),
                          ("views", 1)]:
        r.add_argument("--" + name, type=int, default=default)
    r.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    r.add_argument("--precision", choices=["fp32", "tf32"], default="fp32")
    p = sub.add_parser("report")
    p.add_argument("--ecl", required=True)
    p.add_argument("--torch", required=True)
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "run":
        run(a)
        return 0
    return report(a)


if __name__ == "__main__":
    sys.exit(main())
