"""Certificates: the cluster CA, serving and client certificates, kubeconfig material (`certs`),
bootstrap tokens (`tokens`), the cloud's bootstrap/CSR server on :10002 (`bootstrap`) and the
edge side that joins and rotates (`client`)."""
