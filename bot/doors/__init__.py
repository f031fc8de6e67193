"""Doors in: each turns one wire payload into an :class:`bot.updates.Update` (SPEC §1)."""
