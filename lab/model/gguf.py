"""GGUF (llama.cpp's one-file format) -> the lab's Transformer, its tokenizer data, and the raw
quantized blocks.

    args = model_args(path)                       # header only: milliseconds
    state = read_state_dict(path, args)           # float32, lab/HF names, Q/K rows un-permuted
    raw = read_quantized(path)                    # {name: QuantizedTensor("Q4_1", shape, bytes)}
    loaded = load(path, device=..., dtype=...)    # LoadedModel with its Tokenizer

Two layout facts make a GGUF differ from a Hugging Face checkpoint:
  * ggml lists dims innermost first: a [out, in] weight has shape (in, out) in the header; the
    data itself is row-major [out, in] like torch's, quantized in blocks of 32 along `in`.
  * llama.cpp's converter permutes the rows of q_proj and k_proj so that rotary pairs are adjacent
    (interleaved RoPE, (2i, 2i+1)). The lab (like HF) rotates pairs (i, i + D/2), so we undo it per
    head: rows [h, 2, D/2] were stored as [h, D/2, 2].
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lab.errors import LabError
from lab.model.llama import ModelArgs

ARCHITECTURES = ("llama",)  # SmolLM2, Llama 1-3 and Mistral GGUFs all say "llama"

# GGUF tensor name -> lab name; per-block names get the prefix `layers.{i}.`
_TOP = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight", "output.weight": "lm_head.weight"}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


class QuantizedTensor(NamedTuple):
    qtype: str  # ggml type name: "Q4_1", "Q8_0", "F32" …
    shape: tuple[int, ...]  # logical torch shape, e.g. (out, in)
    raw: np.ndarray  # uint8 [out, bytes_per_row] for block types (float array for F32/F16)


# ---------------------------------------------------------------------------------------------
# Header: a small reader of the key/value metadata, so model_args() need not parse tensors
# ---------------------------------------------------------------------------------------------
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}


def read_metadata(path: str | Path, arrays: tuple[str, ...] = ()) -> dict[str, Any]:
    """The header's key/value pairs. Arrays are read only for keys in `arrays` (the vocabulary is
    ~100K strings); the others are left as their length."""
    return _read_header(Path(path), arrays, tensors=False)[0]


class TensorInfo(NamedTuple):
    name: str
    qtype: Any  # gguf.GGMLQuantizationType
    ne: tuple[int, ...]  # ggml dims, innermost first: (in, out) for a weight
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:  # torch order
        return tuple(reversed(self.ne))


def read_tensor_infos(path: str | Path) -> list[TensorInfo]:
    """The tensor directory (names, types, shapes, offsets), checked against the file size.
    gguf.GGUFReader also parses the ~100K-entry vocabulary into numpy views, which takes seconds;
    this reads the same directory in milliseconds."""
    return _read_header(Path(path), (), tensors=True)[1]


def _read_header(path: Path, arrays: tuple[str, ...], tensors: bool):
    import gguf

    if not path.is_file():
        raise LabError(f"{path}: no such GGUF file")
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise LabError(f"{path}: not a GGUF file (bad magic); give a .gguf file made by llama.cpp's converter")
            version, = struct.unpack("<I", f.read(4))
            if version < 2:
                raise LabError(f"{path}: GGUF version {version} is too old (need 2 or 3)")
            n_tensors, n_kv = struct.unpack("<QQ", _exact(f, 16))
            meta = {}
            for _ in range(n_kv):
                key = _string(f)
                vtype, = struct.unpack("<I", _exact(f, 4))
                meta[key] = _value(f, vtype, key in arrays)
            if not tensors:
                return meta, []
            raw = []
            for _ in range(n_tensors):
                name = _string(f)
                n_dims, = struct.unpack("<I", _exact(f, 4))
                ne = struct.unpack(f"<{n_dims}Q", _exact(f, 8 * n_dims))
                qtype, offset = struct.unpack("<IQ", _exact(f, 12))
                raw.append((name, qtype, ne, offset))
            align = int(meta.get("general.alignment", 32))
            data_start = -(-f.tell() // align) * align
    except (struct.error, EOFError, UnicodeDecodeError) as e:
        raise LabError(f"{path}: GGUF header is truncated or corrupt ({type(e).__name__}: {e}); re-download the file") from None
    size = path.stat().st_size
    infos = []
    for name, qtype, ne, offset in raw:
        try:
            qt = gguf.GGMLQuantizationType(qtype)
            block, type_size = gguf.GGML_QUANT_SIZES[qt]
        except (ValueError, KeyError):
            raise LabError(f"{path}: tensor {name!r} has unknown ggml type {qtype}: corrupt file, or newer than the gguf package") from None
        n = int(np.prod(ne, dtype=np.int64))
        nbytes = n // block * type_size
        info = TensorInfo(name, qt, tuple(int(x) for x in ne), data_start + offset, nbytes)
        if ne[0] % block or info.offset + nbytes > size:
            raise LabError(f"{path}: tensor {name!r} runs past the end of the file ({size:,} bytes): truncated, re-download it")
        infos.append(info)
    return meta, infos


def _exact(f, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise EOFError(f"wanted {n} bytes at offset {f.tell()}, file ends")
    return b


def _string(f) -> str:
    n, = struct.unpack("<Q", _exact(f, 8))
    if n > 1 << 26:
        raise EOFError(f"string of {n} bytes")
    return _exact(f, n).decode("utf-8")


def _value(f, vtype: int, keep: bool):
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, _exact(f, struct.calcsize(fmt)))[0]
    if vtype == 8:
        return _string(f)
    if vtype == 9:
        etype, count = struct.unpack("<IQ", _exact(f, 12))
        if etype in _NP:
            data = _exact(f, count * np.dtype(_NP[etype]).itemsize)
            return np.frombuffer(data, _NP[etype]).copy() if keep else count
        if etype == 8:
            if keep:
                return [_string(f) for _ in range(count)]
            for _ in range(count):  # skip: read each length, seek past the bytes
                n, = struct.unpack("<Q", _exact(f, 8))
                f.seek(n, 1)
            return count
        raise EOFError(f"array of unsupported element type {etype}")
    raise EOFError(f"unknown value type {vtype}")


def model_args(path: str | Path, meta: dict | None = None) -> ModelArgs:
    """ModelArgs from the header alone. Raises LabError for a non-Llama architecture."""
    meta = meta if meta is not None else read_metadata(path)
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise LabError(f"{path}: architecture {arch!r} is not supported; the lab loads Llama-family GGUFs ({', '.join(ARCHITECTURES)})")
    try:
        g = lambda k: meta[f"{arch}.{k}"]
        n_heads = int(g("attention.head_count"))
        dim = int(g("embedding_length"))
        head_dim = int(meta.get(f"{arch}.attention.key_length", dim // n_heads))
        vocab = meta.get(f"{arch}.vocab_size") or meta.get("tokenizer.ggml.tokens")
        return ModelArgs(
            dim=dim,
            n_layers=int(g("block_count")),
            n_heads=n_heads,
            n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", n_heads)),
            head_dim=head_dim,
            ffn_dim=int(g("feed_forward_length")),
            vocab_size=int(vocab),
            rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
            norm_eps=float(g("attention.layer_norm_rms_epsilon")),
            tie_embeddings=True,  # refined by read_state_dict: untied iff output.weight exists
            max_seq_len=int(meta.get(f"{arch}.context_length", 4096)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise LabError(f"{path}: GGUF metadata lacks or garbles {e} needed to build a {arch} model") from None


# ---------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------
def _tensor_data(path: Path, info: TensorInfo, mm: np.ndarray) -> np.ndarray:
    """The tensor's bytes as rows: uint8 [rows, bytes_per_row] (a view of the memory map)."""
    rows = int(np.prod(info.ne[1:], dtype=np.int64)) if len(info.ne) > 1 else 1
    return mm[info.offset : info.offset + info.nbytes].reshape(rows, -1)


def _lab_name(gguf_name: str, n_layers: int) -> str | None:
    """Lab parameter name, or None for a block beyond a truncated model's n_layers."""
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK:
        i = int(parts[1])
        return f"layers.{i}.{_BLOCK[parts[2]]}.{parts[3]}" if i < n_layers else None
    return gguf_name  # unknown: kept under its own name so the loader reports it


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of q_proj/k_proj: rows [h, D/2, 2] -> [h, 2, D/2].
    Works on float rows and on rows of raw quantized blocks alike (it only moves rows)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute_if_qk(name: str, w: np.ndarray, args: ModelArgs) -> np.ndarray:
    if name.endswith("q_proj.weight"):
        return unpermute_rows(w, args.n_heads)
    if name.endswith("k_proj.weight"):
        return unpermute_rows(w, args.n_kv_heads)
    return w


def read_state_dict(path: str | Path, args: ModelArgs | None = None) -> dict[str, torch.Tensor]:
    """Dequantized float32 tensors under lab names (blocks beyond args.n_layers skipped)."""
    import gguf

    path = Path(path)
    args = args or model_args(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    state: dict[str, torch.Tensor] = {}
    for info in read_tensor_infos(path):
        name = _lab_name(info.name, args.n_layers)
        if name is None:
            continue
        try:
            w = gguf.quants.dequantize(_tensor_data(path, info, mm), info.qtype)
        except Exception as e:
            raise LabError(f"{path}: cannot dequantize tensor {info.name!r} of type {info.qtype.name} ({e})") from None
        w = np.asarray(w, dtype=np.float32).reshape(info.shape)
        state[name] = torch.from_numpy(np.array(_unpermute_if_qk(name, w, args)))  # owned, writable
    return state


def read_quantized(path: str | Path, args: ModelArgs | None = None) -> dict[str, QuantizedTensor]:
    """The original blocks, untouched except that q/k rows are un-permuted (so each row of blocks
    dequantizes straight to the lab's weight row). For the quantization axis: Q4_1 blocks are
    32 weights in 20 bytes (fp16 scale d, fp16 min m, 16 bytes of 4-bit q; w = d·q + m), Q8_0
    blocks 32 weights in 34 bytes (fp16 scale, 32 int8). F32 tensors come as float32 arrays."""
    path = Path(path)
    args = args or model_args(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for info in read_tensor_infos(path):
        name = _lab_name(info.name, args.n_layers)
        if name is None:
            continue
        raw = _tensor_data(path, info, mm)
        if info.qtype.name in ("F32", "F16", "BF16"):
            raw = raw.view({"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[info.qtype.name]).reshape(info.shape)
        out[name] = QuantizedTensor(info.qtype.name, info.shape, np.array(_unpermute_if_qk(name, raw, args)))
    return out


def load(path: str | Path, *, device, dtype: torch.dtype, n_layers: int | None = None):
    """A complete LoadedModel (weights + tokenizer) from a GGUF file, or one LabError."""
    from dataclasses import replace

    from lab.model import LoadedModel
    from lab.model.tokenizer import Tokenizer
    from lab.model.weights import from_state

    path = Path(path)
    meta = read_metadata(path, arrays=Tokenizer.GGUF_ARRAYS)
    args = model_args(path, meta)
    if n_layers:
        args = replace(args, n_layers=min(n_layers, args.n_layers))
    state = read_state_dict(path, args)
    args = replace(args, tie_embeddings="lm_head.weight" not in state)
    model = from_state(args, state, str(path), device=device, dtype=dtype)
    return LoadedModel(model, args, Tokenizer.from_gguf_metadata(meta, str(path)), source=str(path))
