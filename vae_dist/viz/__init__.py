"""The viz room: pictures of a run's images and latents, shared by TensorBoard and `generate`.

pictures.py (labelled, enlarged grids), summary_images.py (what TensorBoard shows), plots.py
(matplotlib scatter plots), image_grid.py and image_files.py (arrays to PNG/GIF).
"""
