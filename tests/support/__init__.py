"""Helpers the test modules of every folder share: waiting, media peers, recordings, servers."""
