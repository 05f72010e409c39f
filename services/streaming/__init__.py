"""Stream protocols shared by the API server, cloudcore and edgecore: the cloud-edge stream tunnel,
Kubernetes' channel framing for exec/attach/port-forward, and the SPDY/3.1 subset kubectl and CRI use."""
