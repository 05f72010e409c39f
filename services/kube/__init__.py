"""Async Kubernetes REST client for our own components: list/watch with resume, patch helpers.

Works against our API server and, unchanged, against a real kube-apiserver."""
