#!/usr/bin/env python3
"""Makes webtune's bundled demo: a tiny Llama that knows a few word games, and a dataset that
teaches it a new one in a short LoRA run.

Run once, by hand (not in CI): `python3 scripts/pretrain_demo.py www/demo` (torch, transformers,
tokenizers; CPU, a few minutes). Everything is generated here from fixed seeds: no download.

The model is pretrained on lines such as `Reverse: plant -> tnalp`, `Copy: ...`, `Upper: ...` and
`Swap: ...` (first and last letters exchanged). The demo dataset asks for reversal under a keyword
the model has never seen, `Backwards: plant ->` -> ` tnalp`. The base model answers with a muddle of
its games: 3 of the 16 eval prompts right (greedy, in the page on Chromium); the page's default run
for it (LoRA r 8 on q/k/v/o, lr 1e-2, 40 steps) maps the new keyword onto the skill it already has:
16 of 16 right (tests/browser/page-demo-learns.test.mjs asserts at least 12 tuned, at most 8 base),
so the page's "Try it" shows the tuned model answering where the base does not.
"""

import json
import math
import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from tokenizers.pre_tokenizers import ByteLevel
from transformers import LlamaConfig, LlamaForCausalLM

SEED = 20261128
LETTERS = "abcdefghijklmnopqrstuvwxyz"
EOS, PAD = 0, 1


def byte_tokenizer() -> Tokenizer:
    """Byte-level BPE without merges: every letter is one token, so spelling games are learnable."""
    byte_chars = sorted(ByteLevel.alphabet(), key=lambda ch: bytes_of(ch))
    vocab = {"<|endoftext|>": EOS, "<|pad|>": PAD}
    for i, ch in enumerate(byte_chars):
        vocab[ch] = i + 2
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(["<|endoftext|>", "<|pad|>"])
    return tok


def bytes_of(ch: str) -> int:
    """The byte a ByteLevel alphabet character stands for (GPT-2's bytes_to_unicode, inverted)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(map(chr, cs), bs))[ch]


def word(rng: random.Random) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7)))


GAMES = {
    "Reverse": lambda w: w[::-1],
    "Copy": lambda w: w,
    "Upper": lambda w: w.upper(),
    "Swap": lambda w: w[-1] + w[1:-1] + w[0],
}


def pretraining_line(rng: random.Random) -> tuple[str, str]:
    game = rng.choice(list(GAMES))
    w = word(rng)
    return f"{game}: {w} ->", f" {GAMES[game](w)}"


def demo_prompt(w: str) -> str:
    return f"Backwards: {w} ->"


def encode_example(tok: Tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    p = tok.encode(prompt, add_special_tokens=False).ids
    c = tok.encode(completion, add_special_tokens=False).ids + [EOS]
    return p + c, [-100] * len(p) + c


def batch(tok, rows, device):
    encoded = [encode_example(tok, p, c) for p, c in rows]
    length = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(rows), length), PAD)
    labels = torch.full((len(rows), length), -100)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (x, y) in enumerate(encoded):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids.to(device), mask.to(device), labels.to(device)


@torch.no_grad()
def greedy(model, tok, prompt: str, max_new: int = 12) -> str:
    ids = tok.encode(prompt, add_special_tokens=False).ids
    out = []
    for _ in range(max_new):
        logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
        nxt = int(logits.argmax())
        if nxt == EOS:
            break
        out.append(nxt)
    return tok.decode(out)


def main(out_dir: Path, steps: int = 3000) -> None:
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    torch.set_num_threads(1)
    tok = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=258, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, hidden_act="silu", max_position_embeddings=128, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
        attention_bias=False, mlp_bias=False,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 200
    for step in range(steps):
        lr = 3e-3 * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, mask, labels = batch(tok, [pretraining_line(rng) for _ in range(64)], "cpu")
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e}", flush=True)

    model.eval()
    check = random.Random(SEED + 1)
    for game in GAMES:
        words = [word(check) for _ in range(50)]
        right = sum(greedy(model, tok, f"{game}: {w} ->") == f" {GAMES[game](w)}" for w in words)
        print(f"base model, {game}: {right}/50 right")

    data_rng = random.Random(SEED + 2)
    seen = set()

    def fresh_words(n):
        out = []
        while len(out) < n:
            w = word(data_rng)
            if w not in seen:
                seen.add(w)
                out.append(w)
        return out

    train = [{"prompt": demo_prompt(w), "completion": f" {w[::-1]}"} for w in fresh_words(64)]
    evals = [{"prompt": demo_prompt(w), "completion": f" {w[::-1]}"} for w in fresh_words(16)]
    right = sum(greedy(model, tok, r["prompt"]) == r["completion"] for r in evals)
    print(f"base model on the demo's eval prompts: {right}/16 right (should be few)")

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>",
        "unk_token": None, "model_max_length": 128, "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False, "add_eos_token": False,
    }, indent=2) + "\n")
    for name, rows in (("train.jsonl", train), ("eval.jsonl", evals)):
        (out_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "www/demo"), int(sys.argv[2]) if len(sys.argv) > 2 else 3000)
