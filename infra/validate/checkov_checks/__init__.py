"""The project's own checkov policies (checkov has none for Compose files); tests/test_k8s_policy.py loads them."""
