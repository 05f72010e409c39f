"""Revisioned, watched Kubernetes-shaped object store on SQLite (WAL, group commit).

Backs the cloud's embedded API, the edge's MetaManager and EdgeSite; only the API server uses it."""
