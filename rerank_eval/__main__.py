from rerank_eval.cli import main

main()
