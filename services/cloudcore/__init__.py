"""The cloud side of KubeEdge: cloudhub (one websocket per edge node), edgecontroller (what each
node needs, reliably delivered), the bootstrap/cert server, and the cloudcore process."""
