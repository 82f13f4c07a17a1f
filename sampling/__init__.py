"""What inference.py draws and shows: the canvas (canvas.py), and the trace of its denoising as
an MP4 and a GIF (video.py), one HTML page to scrub (page.py) or a live terminal view (trace.py)."""
