"""Small helpers every roomscribe package may import (`control`, `agent`, `tokens` and the
`roomscribe.*` packages): reconnect backoff and audio constants.

Nothing here imports a third-party package or another roomscribe package, so importing it never
pulls in the server, the pipeline or the client.
"""
