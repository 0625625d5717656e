"""Offline evaluation: replay a public data set through the engine's HTTP API and score its feeds
against baselines trained on the same history (`python -m feed.evaluate ciaodvd|movielens`)."""
