"""The byte-level BPE tokenizer rebuilt from the GGUF: round-trips, special tokens, chat template,
and identical ids to transformers' tokenizer loaded from the same file."""
from __future__ import annotations

import pytest

from lab.context import default_corpus
from lab.model.tokenizer import Tokenizer

TEXTS = [
    "Hello world! 12345 apples cost $3.50 on 2024-01-01.",
    "def f(x):\n    return x ** 2  # square\n\n\n\tindented\ttabs",
    "héllo wörld — naïve café, 日本語のテキスト, emoji 🙂🚀, Ελληνικά, русский",
    "   leading spaces, trailing spaces   \n\n  and   runs     of    blanks",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "I'm sure they'll say it's 'quoted' and \"double\"...",
]


@pytest.fixture(scope="module")
def tok(smollm2_path) -> Tokenizer:
    return Tokenizer.from_gguf(smollm2_path)


def test_round_trip_arbitrary_text(tok):
    import random

    rng = random.Random(0)
    samples = TEXTS + ["".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000), 0x1F600 + rng.randrange(50)]))
                               for _ in range(200)) for _ in range(5)]
    for text in samples:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text


def test_special_tokens(tok):
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    assert tok.token(1) == "<|im_start|>" and tok.token(2) == "<|im_end|>"
    assert tok.stop_ids == [0, 2]  # <|endoftext|> and <|im_end|>
    assert tok.encode("<|im_start|>assistant") [0] == 1  # control tokens stay whole
    assert tok.decode([1, 2], skip_special=True) == ""
    assert not tok.add_bos and tok.encode("a")[0] != 1
    assert tok.encode("a", add_bos=True)[0] == 1


def test_chat_template_renders_from_gguf(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}])
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    plain = Tokenizer(tok.backend, bos_id=1, eos_id=2)  # no template: minimal ChatML fallback
    assert plain.apply_chat_template([{"role": "user", "content": "x"}]) == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"


def test_digits_split_one_by_one(tok):
    ids = tok.encode(" 2024")
    assert [tok.token(i) for i in ids] == ["Ġ", "2", "0", "2", "4"]


def test_identical_ids_to_transformers(tok, smollm2_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    corpus = default_corpus()
    texts = TEXTS + [corpus[:20000], corpus[len(corpus) // 2 : len(corpus) // 2 + 20000]]
    for text in texts:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False), text[:80]
