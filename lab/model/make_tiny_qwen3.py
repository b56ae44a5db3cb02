#!/usr/bin/env python3
"""LAB ONLY: write a tiny, randomly initialised Qwen3-architecture model.

No hub access is needed: the tokenizer is a byte-level BPE trained here on a
few sentences, the weights are random (seeded). The lab serves it with
`transformers serve` on the CPU so the API checks talk to a real engine.

Random models tend to emit whitespace or end-of-sequence tokens, which a
server strips to an empty answer; the generation config suppresses those
tokens, so "a non-empty completion" is a check that means something. The
model writes gibberish, never an empty string.

usage: make_tiny_qwen3.py OUTPUT_DIR [--vocab 384] [--seed 0]
"""

import argparse
import json
import os

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "SGLang serves large language models on NVIDIA GPUs.",
    "Blackwell cards report compute capability 12.0 and need the open kernel modules.",
    "A fleet rollout starts with one canary host, then moves in batches.",
    "Hello world! Say hello in one short sentence.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build(out, vocab, seed):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    size = len(fast)
    config = Qwen3Config(
        vocab_size=size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    # Tokens that decode to nothing visible (whitespace, specials) can never win:
    # the generation config suppresses them, so every step emits visible text.
    banned = [i for i in range(size) if not fast.decode([i], skip_special_tokens=True).strip()]
    model.generation_config.suppress_tokens = banned
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = 64
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "bwfleet-lab-model.json"), "w") as handle:
        json.dump({"lab_only": True, "architecture": "Qwen3ForCausalLM", "vocab": size, "seed": seed,
                   "banned_tokens": len(banned)}, handle, indent=2)
    return size, len(banned)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--vocab", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    size, banned = build(args.out, args.vocab, args.seed)
    print("wrote a tiny Qwen3 model to %s (vocab %d, %d invisible tokens silenced)" % (args.out, size, banned))


if __name__ == "__main__":
    main()
