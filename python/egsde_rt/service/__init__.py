"""The translation service: its Ray Serve deployment, its HTTP surface and page, the proxy guard."""
