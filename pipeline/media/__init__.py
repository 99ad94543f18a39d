"""Media other than still images: video decode/encode (``video``) and optical flow (``flow``)."""
