"""KubeEdge in Python: cloud and edge services of the edge computing platform.

Subpackages are responsibilities (store, apiserver, controllers, cloudcore, edgecore, ...)."""
