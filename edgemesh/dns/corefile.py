"""`edgemesh corefile`: a CoreDNS server block that hands the cluster domain to the mesh DNS."""

from __future__ import annotations


def corefile_stanza(
    cluster_domain: str = "cluster.local",
    mesh_dns: str = "169.254.96.16",
    port: int = 53,
    reverse_zones: tuple[str, ...] = (),
    cache_ttl: int = 30,
) -> str:
    """A server block to add to an existing Corefile.

    Reverse zones are opt-in: sending all of in-addr.arpa to the mesh would route the site's own PTR
    look-ups through it too (that works — the mesh forwards what it does not know — but costs a hop).
    """
    domain = cluster_domain.strip(".")
    zones = " ".join([domain, *(z.strip(".") for z in reverse_zones)])
    target = f"[{mesh_dns}]:{port}" if ":" in mesh_dns else f"{mesh_dns}:{port}"
    return (
        f"# EdgeMesh: names under {domain} are answered by the mesh agent on this node\n"
        f"{zones}:53 {{\n"
        "    errors\n"
        f"    cache {cache_ttl}\n"
        f"    forward . {target}\n"
        "    loop\n"
        "}\n"
    )
