"""The listwise last-token family (jina-reranker-v3): the published procedure (`procedure`), the
model's parts and settings (`model`), how blocks run (`execution`), the reranker (`reranker`) and
the Qwen3 kernels it runs on (`qwen3_kernels`)."""
