"""Media: the one internal event type, a parser per WebSocket dialect (`ws/`), WAV output."""
