"""The batch jobs: one typed config from YAML and the command line, the Spark session, the input
table, the output written in shards (resume, overwrite that replaces only our own outputs, the
retry of failed rows), the run summary, and one module per job (generate, score, evaluate,
prepare_corpus), each with `main()` for its console script and its launcher in jobs/."""
