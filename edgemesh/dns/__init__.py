"""EdgeMesh DNS: authoritative for the cluster domain from the ServiceTable, a caching forwarder for
everything else, served over UDP and TCP; plus the agent's DNS interface and the CoreDNS stanza."""

from .forward import Forwarder
from .server import DNSServer
from .zone import ClusterZone

__all__ = ["ClusterZone", "DNSServer", "Forwarder"]
