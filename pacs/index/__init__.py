"""The SQL index of everything stored."""
