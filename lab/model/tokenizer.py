"""Byte-level BPE (GPT-2 style) rebuilt from a GGUF's vocabulary and merges with `tokenizers`,
or read from a Hugging Face `tokenizer.json`.

    tok = Tokenizer.from_gguf(path)
    ids = tok.encode("def f(x):\\n    return x")      # list[int]
    tok.decode(ids) == "def f(x):\\n    return x"      # byte-level BPE round-trips any text
    tok.apply_chat_template([{"role": "user", "content": "Hi"}])

Pre-tokenization decides which merges can apply, so it must be the one the vocabulary was trained
with. GGUF names it in `tokenizer.ggml.pre`; we mirror llama.cpp / transformers for the Llama
family: SmolLM splits every digit on its own, then GPT-2's regex; Llama-3 uses its own regex.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.errors import LabError

_GPT2_SPLIT = None  # ByteLevel(use_regex=True) is GPT-2's regex
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_NAMES = ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3")
_STOP_NAMES = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>")
CONTROL = 3  # llama.cpp token type: a control token such as <|im_start|>


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (bytes that print stay themselves)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _pre_tokenizer(pre: str | None):
    from tokenizers import Regex, pre_tokenizers as pt

    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in _LLAMA3_NAMES:
        return pt.Sequence([pt.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"), byte_level])
    if pre in ("qwen2", "deepseek-r1-qwen"):
        return pt.Sequence([pt.Split(Regex(_QWEN2_SPLIT), behavior="isolated"), byte_level])
    gpt2 = pt.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact"):  # digits one by one, then GPT-2's regex
        return pt.Sequence([pt.Digits(individual_digits=True), gpt2])
    return gpt2


class Tokenizer:
    GGUF_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")

    def __init__(self, backend, *, bos_id: int | None, eos_id: int | None, pad_id: int | None = None,
                 add_bos: bool = False, chat_template: str | None = None):
        self.backend = backend  # tokenizers.Tokenizer
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.pad_id = pad_id if pad_id is not None else eos_id
        self.chat_template = chat_template
        vocab = backend.get_vocab(with_added_tokens=True)
        self.stop_ids = sorted({i for i in [eos_id] + [vocab.get(n) for n in _STOP_NAMES] if i is not None})

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path: str | Path) -> "Tokenizer":
        from lab.model.gguf import read_metadata

        return cls.from_gguf_metadata(read_metadata(path, arrays=cls.GGUF_ARRAYS), str(path))

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any], source: str = "GGUF") -> "Tokenizer":
        from tokenizers import AddedToken, Tokenizer as Backend, decoders, models

        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise LabError(f"{source}: tokenizer.ggml.model={kind!r}; the lab builds byte-level BPE ('gpt2') tokenizers only")
        tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
        if not isinstance(tokens, list) or not isinstance(merges, list):
            raise LabError(f"{source}: the GGUF holds no tokenizer.ggml.tokens/merges arrays")
        spelling = _bytes_to_unicode()
        alphabet = set(spelling.values())
        # Every real token is written in the byte alphabet; re-spell any that is not (as transformers does).
        vocab = {(t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))): i for i, t in enumerate(tokens)}
        try:
            backend = Backend(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False, byte_fallback=False))
        except Exception as e:  # a merge naming a token that is not in the vocabulary
            raise LabError(f"{source}: the GGUF's tokenizer is inconsistent ({e})") from None
        backend.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"))
        backend.decoder = decoders.ByteLevel()
        types = meta.get("tokenizer.ggml.token_type")
        if types is not None:  # control tokens stay whole in text and decode as themselves
            special = [AddedToken(t, normalized=False, special=True) for t, ty in zip(tokens, types) if ty == CONTROL and set(t) <= alphabet]
            backend.add_special_tokens(special)
        get = lambda k: meta.get(f"tokenizer.ggml.{k}")
        return cls(backend, bos_id=get("bos_token_id"), eos_id=get("eos_token_id"), pad_id=get("padding_token_id"),
                   add_bos=bool(get("add_bos_token")), chat_template=meta.get("tokenizer.chat_template"))

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> "Tokenizer | None":
        """From `tokenizer.json` (+ `tokenizer_config.json` for the template and special ids); None if absent."""
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            return None
        backend = Backend.from_file(str(path / "tokenizer.json"))
        cfg = json.loads((path / "tokenizer_config.json").read_text()) if (path / "tokenizer_config.json").is_file() else {}
        tid = lambda k: backend.token_to_id(_content(cfg.get(k))) if cfg.get(k) else None
        return cls(backend, bos_id=tid("bos_token"), eos_id=tid("eos_token"), pad_id=tid("pad_token"),
                   add_bos=bool(cfg.get("add_bos_token", False)), chat_template=cfg.get("chat_template"))

    # ---- use -----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids; control tokens written in the text (`<|im_start|>`) map to their ids."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, skip_special: bool = False) -> str:
        return self.backend.decode(list(map(int, ids)), skip_special_tokens=skip_special)

    def token(self, i: int) -> str:
        return self.backend.id_to_token(int(i))

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The GGUF's Jinja chat template rendered with jinja2 when installed; else ChatML, which is
        what SmolLM2's template renders (without its default system prompt)."""
        if self.chat_template:
            try:
                from jinja2.sandbox import ImmutableSandboxedEnvironment
            except ImportError:
                ImmutableSandboxedEnvironment = None
            if ImmutableSandboxedEnvironment is not None:  # as transformers renders templates
                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
                tok = lambda i: self.token(i) if i is not None else ""
                return env.from_string(self.chat_template).render(
                    messages=messages, add_generation_prompt=add_generation_prompt,
                    bos_token=tok(self.bos_id), eos_token=tok(self.eos_id))
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _content(token) -> str:
    return token["content"] if isinstance(token, dict) else token
