"""EdgeMesh: service discovery (DNS), service proxy and tunnels across edge subnets.

One agent per node; it watches Services/EndpointSlices through the local MetaServer."""
