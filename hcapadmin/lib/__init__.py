"""Framework-free helpers (no Django imports at module level)."""
