"""The wire layer: method registry, JSON-RPC 2.0 and legacy websocket protocols, sessions, error mapping."""
