"""The config room: every field's default, the checks of its values, and what may change on resume.

Depends on nothing else in vae_dist but errors and fileio.
"""
