"""What the edge serves through the stream tunnel (edgestream.py dials it): container logs from CRI
log files, exec/attach relayed to the runtime's streaming server, and port-forward to the pod."""
