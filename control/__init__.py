"""Control plane: the aiohttp control socket, protocol and session manager."""
