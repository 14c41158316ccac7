"""meshctl: the mesh from a terminal."""
