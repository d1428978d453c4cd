"""Writes questions.jsonl (hand-written questions; titles are looked up by prefix, then checked)."""
import json
from pathlib import Path

T = {  # short names -> title prefixes
    "npu": "Empowering 1000 tokens/second", "qwen": "Qwen2.5-1M", "tlite": "Transformer-Lite", "flatq": "FlatQuant",
    "droid": "DroidSpeak", "prepack": "Prepacking", "cacheblend": "CacheBlend", "fastkv": "FastKV",
    "gen": "Generative AI Beyond LLMs", "qqq": "QQQ", "yoco": "You Only Cache Once", "squeeze": "Squeezed Attention",
    "sserve": "Taming Throughput-Latency", "criti": "CritiPrefill", "sarathi": "SARATHI", "swiftkv": "SwiftKV",
    "distserve": "DistServe", "lazy": "LazyLLM", "tetri": "Inference without Interference", "zipvl": "ZipVL",
    "batchllm": "BatchLLM", "minf": "MInference", "lserve": "LServe", "prodiff": "ProDiff", "turbo": "TurboRAG",
    "mosaic": "MosaicBERT", "flash": "FlashAttention", "longgen": "A Little Goes a Long Way", "fastgen": "DeepSpeed-FastGen",
    "espn": "ESPN", "block": "Block Pruning", "compacter": "Compacter", "normformer": "NormFormer", "fastfit": "When LLMs are Unfit",
    "msg": "2x Faster Language Model Pre-training", "jrt": "Just read twice", "predformer": "PredFormer",
    "epoch": "One Epoch Is All You Need", "kvrun": "KV-Runahead", "diffit": "DiffFit", "journey": "The Journey Matters",
    "ffwd": "Fast Forwarding Low-Rank Training", "magicdec": "MagicDec", "hip": "HiP Attention", "flip": "Scaling Language-Image",
    "matcha": "Matcha-TTS", "fastdraft": "FastDraft", "specul": "Accelerating Production LLMs",
    "futurefill": "FutureFill", "scope": "SCOPE", "speed": "Little Giants", "continual": "Continual Pre-Training",
    "learners": "Efficient Fine-Tuning of Compressed", "wrap": "Rephrasing the Web", "pela": "PELA",
    "stack": "Stacking Your Transformers", "meta": "Meta-Learning to Improve", "accellm": "AcceLLM",
    "algoperf": "Benchmarking Neural Network Training", "prettr": "Efficient Document Re-Ranking", "muppet": "Muppet",
    "disciplined": "A disciplined approach", "selfinfill": "Self-Infilling", "spike": "Spike No More",
    "efcp": "Error Feedback", "honey": "Honey, I Shrunk", "fim": "Improving FIM", "plan": "Do language models plan",
    "precrop": "Structured Pruning is All You Need", "kind": "KIND", "slope": "SLoPe",
}
Q = [
    # factoid
    ("factoid", "What prefill speed does mllm-NPU reach?", ["npu"], ["1,000 tokens/sec"]),
    ("factoid", "How much faster is mllm-NPU's prefill than competitive baselines on average?", ["npu"], ["22.4x"]),
    ("factoid", "What context length do the Qwen2.5-1M models extend to?", ["qwen"], ["1 million tokens"]),
    ("factoid", "What prefill speedup does Transformer-Lite get over CPU-based FastLLM and GPU-based MLC-LLM?", ["tlite"], ["10x"]),
    ("factoid", "What prefill speedup does FlatQuant bring?", ["flatq"], ["2.3x"]),
    ("factoid", "What prefill latency speedup does DroidSpeak achieve?", ["droid"], ["2.78x"]),
    ("factoid", "By how much does CacheBlend reduce time-to-first-token?", ["cacheblend"], ["2.2-3.3X"]),
    ("factoid", "How much does TurboRAG reduce TTFT compared to conventional RAG systems?", ["turbo"], ["9.4x"]),
    ("factoid", "What TTFT improvement does FastKV achieve over HeadKV?", ["fastkv"], ["2.00times"]),
    ("factoid", "How much does Sarathi-Serve improve serving throughput for Mistral-7B on a single A100?", ["sserve"], ["2.6x"]),
    ("factoid", "What speedup does CritiPrefill reach on Llama3-8B?", ["criti"], ["2.7x"]),
    ("factoid", "How many more requests can DistServe serve compared to state-of-the-art systems?", ["distserve"], ["4.48x"]),
    ("factoid", "By how much does LazyLLM accelerate the prefilling stage of LLama 2 7B?", ["lazy"], ["2.34x"]),
    ("factoid", "How much does ZipVL accelerate the prefill phase?", ["zipvl"], ["2.6times"]),
    ("factoid", "How much does LServe accelerate LLM prefilling over vLLM?", ["lserve"], ["2.9x"]),
    ("factoid", "How fast is ProDiff's sampling compared to real time?", ["prodiff"], ["24x"]),
    ("factoid", "What GLUE score does MosaicBERT reach and in how many hours?", ["mosaic"], ["79.6", "1.13 hours"]),
    ("factoid", "How much does LongGen reduce KV cache memory during inference?", ["longgen"], ["62%"]),
    ("factoid", "What throughput does SwiftKV reach for Llama-3.1-70B?", ["swiftkv"], ["16K tokens/s"]),
    ("factoid", "What hit rate does ESPN's software prefetcher achieve?", ["espn"], ["90%"]),
    ("factoid", "What share of parameters does Compacter train?", ["compacter"], ["0.047%"]),
    ("factoid", "How much faster and smaller is the pruned BERT from Block Pruning on SQuAD v1?", ["block"], ["2.4x", "74%"]),
    ("factoid", "By how much does SARATHI reduce pipeline bubbles on GPT-3?", ["sarathi"], ["6.29x"]),
    ("factoid", "What does DeepSpeed-FastGen deliver in effective throughput?", ["fastgen"], ["2.3x"]),
    ("factoid", "How much does BatchLLM outperform vLLM?", ["batchllm"], ["1.1x to 2x"]),
    # paraphrase: no names or title words
    ("paraphrase", "Which system runs large language model prompt processing on a smartphone's neural accelerator?", ["npu"], ["1,000 tokens/sec"]),
    ("paraphrase", "Which work stores precomputed key-value caches of document chunks so retrieval-augmented generation answers start sooner?", ["turbo"], ["9.4x"]),
    ("paraphrase", "Which approach separates the prompt-processing phase and the token-generation phase onto different GPUs?", ["distserve"], ["4.48x"]),
    ("paraphrase", "Which paper splits long prompts into pieces and mixes them with ongoing generation steps to keep GPUs busy?", ["sarathi"], ["1.91x"]),
    ("paraphrase", "Which method avoids padding waste by combining several prompts of different lengths into one sequence?", ["prepack"], []),
    ("paraphrase", "Which attention algorithm reduces reads and writes between GPU high-bandwidth memory and on-chip SRAM?", ["flash"], []),
    ("paraphrase", "Which text-to-speech model uses a progressive diffusion approach to synthesize speech quickly?", ["prodiff"], ["24x"]),
    ("paraphrase", "Which paper argues that training for a single pass over the data can be enough?", ["epoch"], []),
    ("paraphrase", "Which design caches keys and values only once using two stacked decoders?", ["yoco"], []),
    ("paraphrase", "Which classifier library trains in a few seconds for tasks with many classes?", ["fastfit"], ["3-20x"]),
    ("paraphrase", "Which method trains CLIP faster by randomly dropping most image patches during training?", ["flip"], ["400 million image-text pairs"]),
    ("paraphrase", "Which paper cuts the memory of full-matrix optimizers such as GGT and M-FAC by sparsifying the gradients they store?", ["efcp"], ["two orders of magnitude"]),
    ("paraphrase", "What causes sudden jumps in the loss while pre-training large language models, and how can they be avoided?", ["spike"], ["exploding gradients", "embeddings"]),
    ("paraphrase", "Do transformers compute features at one position that are meant to help predict later tokens?", ["plan"], ["pre-caching", "breadcrumbs"]),
    ("paraphrase", "Which paper shows that state-space models such as Mamba answer in-context questions better when the context is repeated in the prompt?", ["jrt"], ["11.0"]),
    ("paraphrase", "Which technique repeats the latest optimizer step as long as the loss on a tiny validation set keeps improving?", ["ffwd"], ["87"]),
    ("paraphrase", "Which method splits a diffusion model's weight matrices with an SVD-like decomposition into common and class-specific parts?", ["kind"], ["45.4M"]),
    ("paraphrase", "Which paper removes whole channels of a convolutional network before training, following a layerwise compression ratio?", ["precrop"], ["PreCropping"]),
    ("paraphrase", "Which work adds a massively multi-task learning stage between pre-training and fine-tuning?", ["muppet"], ["4.8 million"]),
    ("paraphrase", "Which approach makes neural document ranking fast by doing part of the documents' transformer computation at indexing time?", ["prettr"], ["42x"]),
    ("paraphrase", "Which method uses redundant copies of data to balance load across accelerators during LLM inference?", ["accellm"], ["30%"]),
    ("paraphrase", "Which method makes autoregressive generation from convolution-based sequence models quasilinear in the context length?", ["futurefill"], []),
    ("paraphrase", "Which work introduces a time-to-result competition that compares optimizers on fixed hardware across several workloads?", ["algoperf"], ["AlgoPerf"]),
    ("paraphrase", "Which method treats the prompt phase and the output phase differently when compressing attention memory for long reasoning outputs?", ["scope"], ["LongGenBench"]),
    # multi
    ("multi", "Which papers speed up prefill by splitting prompts into chunks?", ["npu", "sarathi", "sserve", "qwen", "tetri", "batchllm"], []),
    ("multi", "Which papers reuse precomputed KV caches of retrieved documents to speed up RAG?", ["cacheblend", "turbo"], []),
    ("multi", "Which papers disaggregate prefill and decoding?", ["distserve", "tetri"], []),
    ("multi", "Which papers are about text-to-speech?", ["prodiff", "matcha"], []),
    ("multi", "Which papers use speculative decoding or draft models?", ["magicdec", "fastdraft", "specul"], []),
    ("multi", "Which papers improve code completion or code generation with infilling?", ["selfinfill", "fim"], []),
    ("multi", "Which papers speed up pre-training by growing a small model into a larger one?", ["msg", "stack"], []),
    ("multi", "Which papers quantize weights, activations or the KV cache to low bit-widths?", ["tlite", "flatq", "qqq", "zipvl"], []),
    ("multi", "Which papers use sparse attention to make long-context models faster?", ["qwen", "squeeze", "hip", "minf", "lserve", "zipvl", "longgen", "flash"], []),
    ("multi", "Which papers propose parameter-efficient fine-tuning methods?", ["compacter", "learners", "pela", "diffit", "ffwd"], []),
    ("multi", "Which papers propose or study scaling laws?", ["speed", "journey", "honey"], []),
    ("multi", "Which papers train models on synthetic data generated by a language model?", ["speed", "wrap", "fastdraft"], []),
    ("multi", "Which papers are about diffusion models?", ["gen", "prodiff", "kind", "diffit"], []),
    ("multi", "Which papers combine pruning or sparsity with the pre-training of language models?", ["journey", "slope"], []),
    ("multi", "Which papers are about choosing training hyper-parameters such as the learning rate or its warm-up?", ["continual", "meta", "disciplined"], []),
    # unanswerable
    ("unanswerable", "What is the capital of France?", [], []),
    ("unanswerable", "Which GPU model did CacheBlend use in its experiments?", [], []),
    ("unanswerable", "How many parameters does GPT-5 have?", [], []),
    ("unanswerable", "What prefill speedup does the Mamba-2 paper report?", [], []),
    ("unanswerable", "Which learning rate did TurboRAG use for fine-tuning?", [], []),
    ("unanswerable", "Who won the 2018 football World Cup?", [], []),
    ("unanswerable", "What is the license of the mllm-NPU source code?", [], []),
    ("unanswerable", "How does PagedAttention manage KV cache memory in vLLM?", [], []),
    ("unanswerable", "What batch size did MInference use in its Needle In A Haystack experiments?", [], []),
    ("unanswerable", "How many GPUs were used to train the Qwen2.5-1M models?", [], []),
    ("unanswerable", "What speedup does Medusa's multi-head decoding report?", [], []),
    ("unanswerable", "How much energy does DistServe use per request?", [], []),
    ("unanswerable", "How does Mixtral's mixture-of-experts routing affect prefill time?", [], []),
    ("unanswerable", "What speedup does FlashAttention-3 reach with FP8 on H100 GPUs?", [], []),
    ("unanswerable", "How many layers does the 1.3B NormFormer model have?", [], []),
    # follow-up: (first question, follow-up)
    ("follow-up", ["How does CacheBlend reuse KV caches?", "By how much does it increase inference throughput?"], ["cacheblend"], ["2.8-5X"]),
    ("follow-up", ["What does mllm-NPU do?", "How much energy does it save?"], ["npu"], ["30.7x"]),
    ("follow-up", ["What is TurboRAG?", "How much does it reduce TTFT on average?"], ["turbo"], ["8.6x"]),
    ("follow-up", ["What does DistServe disaggregate?", "How much tighter SLO can it meet?"], ["distserve"], ["10.2x"]),
    ("follow-up", ["What is LazyLLM?", "By how much does it accelerate prefilling of LLama 2 7B?"], ["lazy"], ["2.34x"]),
    ("follow-up", ["What is MInference?", "By how much does it reduce pre-filling latency on an A100?"], ["minf"], ["10x"]),
    ("follow-up", ["What does KV-Runahead parallelize?", "What speedups does it offer for Llama 7B and Falcon 7B?"], ["kvrun"], ["1.4x", "1.6x"]),
    ("follow-up", ["What is PredFormer?", "How much does it reduce MSE on Moving MNIST?"], ["predformer"], ["51.3%"]),
    ("follow-up", ["What normalization operations does NormFormer add?", "How much faster does it reach GPT3-Large zero-shot performance?"], ["normformer"], ["60% faster"]),
    ("follow-up", ["What is Web Rephrase Augmented Pre-training?", "How much does it speed up pre-training on C4?"], ["wrap"], ["3x"]),
]


def main() -> None:
    from rag.corpus import load_papers
    from rag.settings import DEFAULT_CORPUS

    titles = [p.title for p in load_papers(DEFAULT_CORPUS)]
    out = []
    for i, (kind, question, gold, facts) in enumerate(Q, 1):
        gold_titles = []
        for key in gold:
            match = [t for t in titles if t.startswith(T[key])]
            assert len(match) == 1, (key, match)
            gold_titles.append(match[0])
        row = {"id": f"q{i:03d}", "type": kind, "gold": gold_titles, "key_facts": facts}
        if kind == "follow-up":
            row["history_question"], row["question"] = question
        else:
            row["question"] = question
        out.append(row)
    path = Path(__file__).parent / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    print(f"wrote {len(out)} questions to {path}")


if __name__ == "__main__":
    main()
