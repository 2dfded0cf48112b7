"""Jobs over many images: folders (locally and on Ray Data) and training."""
