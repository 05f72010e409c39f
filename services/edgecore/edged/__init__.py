"""edged runs the node's pods through CRI: sandboxes, containers, images, status and logs.
`cri/` is the CRI gRPC client; `containerd` runs a project-owned containerd; `ociimage` builds local images."""
