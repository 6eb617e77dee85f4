#!/usr/bin/env python3
"""Reference outputs from Hugging Face transformers for Gear.AI's parity tests.

Run on a machine with PyTorch and transformers (the lent GPU machine has both); it runs on CPU in
float32 so the numbers are deterministic. Writes into OUT (default tests/fixtures):

  gear-tiny-reference.json / .f32  gear-tiny logits for a public-domain prompt (last 8 positions,
                                    fp32 compute from the bf16 checkpoint) and its 48-token greedy continuation
  llama3-tiny/                      a Llama-3-shaped config (GQA, rope_scaling llama3, untied embeddings)
                                    with seeded random weights saved as safetensors, plus logits for a prompt

Usage: python3 scripts/reference/make_reference.py [OUT]
"""
import json
import os
import struct
import sys

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures")
os.makedirs(OUT, exist_ok=True)
torch.backends.cuda.matmul.allow_tf32 = False


def write_f32(path, tensor):
    data = tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    with open(path, "wb") as f:
        f.write(data)


def gear_tiny():
    # Prompt: the opening of Alice's Adventures in Wonderland (public domain), encoded by Gear.AI's
    # tokenizer (Microsoft.ML.Tokenizers LlamaTokenizer over models/gear-tiny/tokenizer.model), BOS first.
    prompt = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
              "nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
              "no pictures or conversations in it, 'and what is the use of a book,' thought Alice 'without "
              "pictures or conversation?'")
    ids = [1, 5673, 326, 2665, 284, 804, 560, 3656, 278, 2597, 393, 365, 2318, 331, 263, 2531, 8098, 283, 278, 1152,
           887, 284, 429, 8136, 878, 412, 3521, 411, 356, 737, 563, 277, 559, 263, 1389, 365, 2318, 326, 3116, 8098,
           398, 329, 356, 444, 3702, 412, 2346, 865, 291, 329, 8098, 490, 410, 536, 353, 263, 1288, 278, 261, 1389,
           883, 738, 5673, 490, 2407, 472, 3702, 412, 2656, 1367]
    model = LlamaForCausalLM.from_pretrained(os.path.join(ROOT, "models", "gear-tiny"), dtype=torch.float32,
                                             attn_implementation="eager")
    model.eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0]  # [T, V]
        out = model.generate(x, max_new_tokens=48, do_sample=False, num_beams=1)
    continuation = out[0, len(ids):].tolist()
    last = 8
    write_f32(os.path.join(OUT, "gear-tiny-reference.f32"), logits[-last:])
    meta = {
        "producer": f"transformers {transformers.__version__} LlamaForCausalLM, eager attention, float32 on CPU from the bf16 checkpoint",
        "script": "scripts/reference/make_reference.py",
        "prompt": prompt,
        "prompt_ids": ids,
        "logits_file": "gear-tiny-reference.f32",
        "logits_positions": list(range(len(ids) - last, len(ids))),
        "logits_shape": [last, logits.shape[-1]],
        "argmax_per_position": logits.argmax(-1).tolist(),
        "greedy_continuation_ids": continuation,
    }
    with open(os.path.join(OUT, "gear-tiny-reference.json"), "w") as f:
        json.dump(meta, f, indent=1)


def llama3_tiny():
    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.08,
        bos_token_id=0, eos_token_id=[1, 2],
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 256},
    )
    model = LlamaForCausalLM(config).eval()
    # Non-trivial norms so every weight matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    path = os.path.join(OUT, "llama3-tiny")
    model.save_pretrained(path, safe_serialization=True)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 512, (1, 300), generator=gen)  # 300 > 256: positions past the original context
    with torch.no_grad():
        logits = model(ids).logits[0]
    rows = [0, 1, 2, 100, 255, 256, 299]
    write_f32(os.path.join(path, "reference.f32"), logits[rows])
    meta = {
        "producer": f"transformers {transformers.__version__} LlamaForCausalLM, float32 on CPU, seeded random weights",
        "script": "scripts/reference/make_reference.py",
        "prompt_ids": ids[0].tolist(),
        "logits_file": "reference.f32",
        "logits_positions": rows,
        "logits_shape": [len(rows), 512],
    }
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    print("torch", torch.__version__, "transformers", transformers.__version__)
    gear_tiny()
    llama3_tiny()
    for dirpath, _, files in os.walk(OUT):
        for name in files:
            p = os.path.join(dirpath, name)
            print(p, os.path.getsize(p))
