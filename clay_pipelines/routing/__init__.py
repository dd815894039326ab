"""Routing memory: embeddings of requests, learned routing rules, and the router that uses them."""
