"""dogbreed: a dog-breed image classifier that trains and serves the same way on SageMaker, EC2
and a laptop."""

__version__ = "0.1.0"
