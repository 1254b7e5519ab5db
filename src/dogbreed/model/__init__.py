"""The classifier: torchvision backbones with a new head (build), and the model directory that
training writes and serving reads (artifact)."""
