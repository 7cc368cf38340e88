"""Where a model comes from and what its files hold: names, hub ids, DBFS and volume paths, the
Ollama store, GGUF headers, model families. Nothing here imports Spark or torch."""
