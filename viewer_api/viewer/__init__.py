"""The web viewer's server side: the study model, film sheets and study downloads."""
