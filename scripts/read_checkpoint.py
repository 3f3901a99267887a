#!/usr/bin/env python3
"""read_checkpoint.py - list the tensors and metadata of an ecl checkpoint.

Uses the `safetensors` package (pip install safetensors numpy) when it is
installed, which shows that PyTorch-side tools read ecl's files; otherwise a
plain json + struct reader of the same format. Prints one line per tensor
(name, dtype, shape and, with numpy, mean and largest magnitude), then the
metadata; --config prints the stored INI text of the run's config.

Usage: scripts/read_checkpoint.py FILE [--config] [--plain]
Not here: converting or editing checkpoints.
"""
import json
import struct
import sys

DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
STRUCT_CODES = {"F32": "f", "F64": "d", "I64": "q", "I32": "i", "U8": "B"}


def read_with_safetensors(path):
    """(tensors, metadata) through the safetensors package; tensors are
    (name, dtype, shape, stats) with stats None when numpy is absent."""
    from safetensors import safe_open
    import numpy as np

    tensors = []
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        for name in f.keys():
            x = f.get_tensor(name)
            stats = None
            if x.size:
                stats = (float(np.mean(x, dtype=np.float64)), float(np.max(np.abs(x))))
            tensors.append((name, f.get_slice(name).get_dtype(), list(x.shape), stats))
    return tensors, metadata


def read_plain(path):
    """(tensors, metadata) with only the standard library, checking sizes."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        sys.exit(f"{path}: {len(raw)} bytes, too short for safetensors")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        sys.exit(f"{path}: header length {n} runs past the end of the file ({len(raw)} bytes)")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})

    # Each tensor: its size must match its offsets; small dtypes give stats.
    tensors = []
    for name, info in header.items():
        begin, end = info["data_offsets"]
        count = 1
        for d in info["shape"]:
            count *= d
        if count * DTYPE_SIZES[info["dtype"]] != end - begin or end > len(data):
            sys.exit(f"{path}: tensor {name}: shape {info['shape']} does not fit "
                     f"data_offsets [{begin}, {end}]")
        stats = None
        code = STRUCT_CODES.get(info["dtype"])
        if code and count:
            vals = struct.unpack(f"<{count}{code}", data[begin:end])
            stats = (sum(vals) / count, max(abs(v) for v in vals))
        tensors.append((name, info["dtype"], info["shape"], stats))
    return tensors, metadata


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    path = args[0]
    reader = "plain json + struct"
    if "--plain" in argv:
        tensors, metadata = read_plain(path)
    else:
        try:
            tensors, metadata = read_with_safetensors(path)
            reader = "safetensors package"
        except ImportError:
            tensors, metadata = read_plain(path)

    print(f"{path}: {len(tensors)} tensors (read with the {reader})")
    for name, dtype, shape, stats in sorted(tensors):
        extra = f"  mean {stats[0]: .4e}  max|x| {stats[1]:.4e}" if stats else ""
        print(f"  {name:40s} {dtype:4s} {str(shape):18s}{extra}")
    print("metadata:")
    for key in sorted(metadata):
        if key != "config":
            print(f"  {key:20s} {metadata[key]}")
    if "config" in metadata:
        if "--config" in argv:
            print("config:\n" + metadata["config"])
        else:
            n = len(metadata["config"])
            print(f"  {'config':20s} ({n} characters; --config prints it)")


if __name__ == "__main__":
    main(sys.argv)
