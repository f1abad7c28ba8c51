"""Small helpers every roomscribe package may import (`control`, `agent`, `tokens` and the
`roomscribe.*` packages): reconnect backoff, audio constants and where the installed data files are.

Nothing here imports a third-party package or another roomscribe package, so importing it never
pulls in the server, the pipeline or the client.
"""
