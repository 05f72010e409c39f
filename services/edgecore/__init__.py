"""The edge agent: edgehub (the link to the cloud), metamanager (the edge store), MetaServer, and
the node agent; one asyncio process of supervised modules."""
