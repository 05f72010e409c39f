"""The cluster's brains: scheduler and controllers (workloads, endpoints, GC, namespaces, nodes,
service accounts), each reconciling by list-watch through the API, never by touching storage."""
