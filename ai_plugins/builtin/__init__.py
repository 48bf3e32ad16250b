"""Plugins that ship with cloudfilm (registered through the ``cloudfilm.plugins`` entry points)."""
