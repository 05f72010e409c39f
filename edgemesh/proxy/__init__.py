"""Service proxy: ClusterIP:port → endpoints, by kernel DNAT (nftables/iptables) where this node reaches
the endpoint directly, else through a userspace path into the tunnel; load-balancing policies included."""

from edgemesh.proxy.metrics import ProxyMetrics
from edgemesh.proxy.proxier import Proxy, ProxyConfig
from edgemesh.proxy.userspace import Dialer, DirectDialer, SocketDialer

__all__ = ["Dialer", "DirectDialer", "Proxy", "ProxyConfig", "ProxyMetrics", "SocketDialer"]
