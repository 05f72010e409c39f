"""keadm: install, join and reset KubeEdge daemons on this machine (``keadm init|gettoken|join|reset``),
plus ``dev-run`` behind ``make run`` (a cloudcore and a local edgecore in the foreground)."""
