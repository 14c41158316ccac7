"""The research agent: BM25 search over a corpus bundled with the package, streamed as cited passages."""
