"""HTTP/1.1 for the client and metrics ports: a sans-IO request parser and an asyncio protocol."""
