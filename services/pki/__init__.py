"""Certificates: the cluster CA, serving and client certificates, kubeconfig material.

Later: bootstrap tokens, CSR signing and rotation for edge nodes."""
