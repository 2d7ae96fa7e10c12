"""Datasets through ir_datasets (`ir_dataset`: queries, judgements, document texts, in library
terms) and what `rerank-eval fetch` downloads ahead of an offline run (`fetch`)."""
