"""What rerankers and dense encoders share about models: where a checkpoint's files are and what
identifies them (`checkpoint`), whether its weights fit its config (`weights_fit`), and device,
dtype, attention and token-budget batching (`common`)."""
