"""The served model's tokenizer at the router (no Ray): exact prompt counts, the chat template,
the same placement inputs for text and token-id prompts, emulated engines that speak the
tokenizer's ids, and sampling fields refused with the field named where they cannot be honoured.

Uses the tiny Llama's tokenizer (scripts/make_tiny_model.py, tokenizer files only: ~1 s).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from hetserve.engines.base import GenerateRequest, UnsupportedParameterError
from hetserve.engines.emulated import EmulatedEngine
from hetserve.records import LatencyCoeffs
from hetserve.serving.errors import RequestError, from_exception
from hetserve.serving.openai_api import ChatCompletionRequest, CompletionRequest
from hetserve.serving.prepare import RequestPreparer, count_text_tokens, placement_info

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny-llama"
CJK = "异构集群上的大语言模型服务需要精确的词元计数。" * 40
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "How many tokens is this prompt, 你好?"},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    for name in ("transformers", "tokenizers"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")
    spec = importlib.util.spec_from_file_location("hetserve_make_tiny_tok", REPO / "scripts" / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.make_tiny_tokenizer(tmp_path_factory.mktemp("tiny-tok"))
    from hetserve.serving.tokenizer import load_tokenizer

    return load_tokenizer(str(path))


def preparer(tok, **kw) -> RequestPreparer:
    return RequestPreparer(MODEL, 8192, 2048, tokenizer=tok, **kw)


def test_a_cjk_prompt_counts_what_the_tokenizer_counts(tokenizer):
    prepared = preparer(tokenizer).completion(CompletionRequest(model=MODEL, prompt=CJK, max_tokens=4))
    expected = len(tokenizer.hf.encode(CJK))
    assert prepared.num_prompt_tokens == expected == len(prepared.request.prompt_token_ids)
    assert expected != count_text_tokens(CJK)  # the 4-characters rule would be far off
    assert expected > 2 * count_text_tokens(CJK)


def test_text_and_token_id_prompts_give_the_same_placement_inputs(tokenizer):
    text = "Once upon a time the scheduler sent a request to the fast instance"
    ids = tokenizer.hf.encode(text)
    p = preparer(tokenizer)
    by_text = p.completion(CompletionRequest(model=MODEL, prompt=text, max_tokens=16))
    by_ids = p.completion(CompletionRequest(model=MODEL, prompt=ids, max_tokens=16))
    a, b = placement_info(by_text, 5.0), placement_info(by_ids, 5.0)
    assert (a.num_prompt_tokens, a.max_tokens, a.arrival_s) == (b.num_prompt_tokens, b.max_tokens, b.arrival_s)
    assert by_text.request.prompt_token_ids == by_ids.request.prompt_token_ids == tuple(ids)


def test_a_chat_is_rendered_by_the_models_chat_template(tokenizer):
    body = ChatCompletionRequest(model=MODEL, messages=MESSAGES, max_tokens=8)
    prepared = preparer(tokenizer).chat(body)
    expected = tokenizer.hf.apply_chat_template(MESSAGES, add_generation_prompt=True)["input_ids"]
    assert list(prepared.request.prompt_token_ids) == list(expected)
    assert prepared.num_prompt_tokens == len(expected)
    assert prepared.request.prompt is None
    assert tokenizer.hf.decode(expected).endswith("Assistant:")  # the template's generation prompt


def test_without_a_tokenizer_the_estimate_and_transcript_stay():
    p = RequestPreparer(MODEL, 8192, 2048)
    prepared = p.chat(ChatCompletionRequest(model=MODEL, messages=MESSAGES, max_tokens=8))
    assert prepared.request.prompt.endswith("<|assistant|>\n")
    assert prepared.num_prompt_tokens == count_text_tokens(prepared.request.prompt)


def test_the_context_check_uses_the_exact_count(tokenizer):
    p = RequestPreparer(MODEL, 600, 2048, tokenizer=tokenizer)
    body = CompletionRequest(model=MODEL, prompt=CJK[:200], max_tokens=100)
    assert count_text_tokens(CJK[:200]) + 100 <= 600  # the estimate would let it through
    with pytest.raises(RequestError) as err:
        p.completion(body)
    assert err.value.status_code == 400 and err.value.param == "prompt"


def _emulated_run(request: GenerateRequest, output_token_ids=None) -> list:
    """Every chunk an emulated engine (fast, one instance) streams for `request`; its output ids
    drawn from `output_token_ids` (default: the engine's own)."""
    vocab = {} if output_token_ids is None else {"output_token_ids": output_token_ids}
    engine = EmulatedEngine(
        coeffs=LatencyCoeffs(a_p=0.0, b_p=0.0, a_d=0.0, c_d=0.0, b_d=0.001),
        kv_capacity_tokens=100_000,
        max_num_seqs=8,
        max_model_len=8192,
        **vocab,
    )

    async def main():
        await engine.start()
        try:
            return [c async for c in engine.generate(request)]
        finally:
            await engine.shutdown()

    return asyncio.run(main())


def test_emulated_engine_speaks_the_tokenizers_ids_and_the_router_detokenizes(tokenizer):
    """Usage equals what a client counts by re-tokenizing the streamed text."""
    vocab = tokenizer.output_vocabulary()
    prepared = preparer(tokenizer, detokenize=True).completion(
        CompletionRequest(model=MODEL, prompt=CJK, max_tokens=300)
    )
    chunks = _emulated_run(prepared.request, vocab)
    text = "".join(prepared.text_of(c) for c in chunks)
    ids = [t for c in chunks for t in c.token_ids]
    assert set(ids) <= set(vocab)
    assert chunks[-1].num_output_tokens == 300 == len(tokenizer.hf.encode(text, add_special_tokens=False))
    assert chunks[-1].num_prompt_tokens == len(tokenizer.hf.encode(CJK))
    assert text == tokenizer.decode(ids)


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("logprobs", {"prompt": "hi", "logprobs": 2}),
        ("stop_token_ids", {"prompt": "hi", "stop_token_ids": [2]}),
        ("presence_penalty", {"prompt": "hi", "presence_penalty": 0.5}),
        ("frequency_penalty", {"prompt": "hi", "frequency_penalty": -0.5}),
        ("allowed_token_ids", {"prompt": "hi", "allowed_token_ids": [5, 6]}),
    ],
)
def test_emulated_engine_refuses_what_it_cannot_honour_naming_the_field(field, body):
    prepared = RequestPreparer(MODEL, 8192, 2048).from_dict({"model": MODEL, **body})
    with pytest.raises(UnsupportedParameterError) as exc:
        _emulated_run(prepared.request)
    err = from_exception(exc.value)
    assert (err.status_code, err.param) == (400, field)


@pytest.mark.parametrize(
    ("param", "body"),
    [
        ("logprobs", {"prompt": "hi", "logprobs": 21}),
        ("top_logprobs", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21}),
        ("min_tokens", {"prompt": "hi", "max_tokens": 4, "min_tokens": 5}),
        ("stop_token_ids", {"prompt": "hi", "stop_token_ids": [5000]}),
        ("allowed_token_ids", {"prompt": "hi", "allowed_token_ids": [5000]}),
    ],
)
def test_sampling_fields_are_bounded_as_vllm_bounds_them(param, body):
    with pytest.raises(RequestError) as err:
        RequestPreparer(MODEL, 8192, 2048).from_dict({"model": MODEL, **body})
    assert err.value.status_code == 400 and param in (err.value.param or "")


def test_sampling_fields_pass_through_to_the_engine_request():
    p = RequestPreparer(MODEL, 8192, 2048)
    req = p.from_dict(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8,
            "logprobs": True,
            "top_logprobs": 3,
            "stop_token_ids": [2, 7],
            "presence_penalty": 0.25,
            "frequency_penalty": 0.5,
            "min_tokens": 2,
        }
    ).request
    assert (req.logprobs, req.stop_token_ids, req.presence_penalty, req.frequency_penalty, req.min_tokens) == (
        3,
        (2, 7),
        0.25,
        0.5,
        2,
    )
    assert GenerateRequest("x", 4).logprobs is None


def _llama2_style_tokenizer(out_dir: Path) -> Path:
    """A tiny SentencePiece-style tokenizer.json laid out as Llama 2's: "▁"-prefixed pieces, the
    normalizer prepends "▁" and turns spaces into "▁", the decoder strips the first space, byte
    fallback. Trained locally on word-split text, as SentencePiece never merges across words."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = "the quick brown fox jumps over lazy dog serving model tokens router instance batch prompt".split()
    corpus = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(400)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.pre_tokenizer = None  # Llama 2's tokenizer.json: the normalizer does it
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out_dir)
    return out_dir


def test_emulated_output_vocabulary_of_a_sentencepiece_tokenizer(tmp_path):
    """With "▁word" pieces (a lone one decodes without its space) the emulated engine still finds
    whole-word ids, and any sequence of them re-encodes to itself, streamed or not."""
    for name in ("transformers", "tokenizers"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")
    from hetserve.serving.tokenizer import load_tokenizer

    tok = load_tokenizer(str(_llama2_style_tokenizer(tmp_path / "sp")))
    assert tok.hf.decode([tok.hf.convert_tokens_to_ids("▁quick")]) == "quick"  # the case that found none
    vocab = tok.output_vocabulary()
    assert len(vocab) >= 10 and all(tok.hf.convert_ids_to_tokens(i).startswith("▁") for i in vocab)
    prepared = RequestPreparer(MODEL, 8192, tok.vocab_size, tokenizer=tok, detokenize=True).completion(
        CompletionRequest(model=MODEL, prompt="the quick brown fox", max_tokens=200)
    )
    chunks = _emulated_run(prepared.request, vocab)
    ids = [t for c in chunks for t in c.token_ids]
    streamed = "".join(prepared.text_of(c) for c in chunks)
    assert len(ids) == 200 and len(set(ids)) > 5
    assert streamed == tok.decode(ids)
    assert tok.hf.encode(streamed, add_special_tokens=False) == ids
