"""The data plane: gateway, proxy, hooks, routing, caches, quota checks, upstream transport."""
