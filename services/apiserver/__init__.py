"""Kubernetes REST API over a store: discovery, CRUD, patch, watch, Table, CRDs, authn/authz.

Serves the cloud's embedded API, the edge's MetaServer and EdgeSite's API."""
